// Function discovery from code: recursive descent over the executable bytes of an image, from
// every start the tables know and every address the code calls, jumps to or points at. The walk
// is generic; what an instruction does to control flow comes from one FlowDecoder per machine
// (flow_x64.cpp, flow_arm64.cpp), both built on LLVM's MCInstrAnalysis. This library knows nothing
// of containers: the reader (formats/) gives it regions and starts and takes the extents back.
#pragma once

#include "hotforge/core/target.h"  // Machine

#include <llvm/ADT/ArrayRef.h>
#include <llvm/Support/Error.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace hotforge::codeflow {

// What one instruction does to control flow.
enum class FlowKind : uint8_t {
  Plain,            // falls through
  Call,             // direct (target known) or indirect call; falls through
  Jump,             // unconditional direct jump
  ConditionalJump,  // direct jump or fall through
  Return,           // return, or an indirect jump that leaves the function (tail call through memory, veneer)
  Dispatch,         // indirect jump that may stay in the function (jump table): targets unknown
  Trap,             // ud2, brk, hlt: nothing follows, part of the function
  Fill,             // nop: alignment inside and between functions
  Pad,              // int3, udf #0, x64 zero bytes: fill between functions, never executed
  Invalid,          // does not decode
};

// Where a dispatch's targets are: entry i, `entrySize` bytes at rva + i * entrySize (sign-extended
// when `isSigned`), leads to base + (entry << shift).
struct JumpTable {
  uint64_t rva = 0;
  uint64_t base = 0;
  uint8_t entrySize = 0;  // 0: the decoder did not recognise the table
  uint32_t entries = 0;   // from the bounds check before it (`cmp; ja`); 0: not known
  uint8_t shift = 0;
  bool isSigned = true;
};

struct FlowStep {
  FlowKind kind = FlowKind::Invalid;
  uint8_t size = 1;
  bool hasTarget = false;  // Call/Jump/ConditionalJump with a direct target
  uint64_t target = 0;
  uint64_t codeAddress = 0;  // an address the instruction forms (lea, adr, adrp+add), 0 when none
  JumpTable table;           // Dispatch: its table, when recognised
};

// Per machine: classifies one instruction at `rva`. Stateful within one function (Arm64 pairs
// ADRP with ADD); beginFunction resets that state. Not thread-safe.
class FlowDecoder {
public:
  virtual ~FlowDecoder() = default;
  virtual void beginFunction() {}
  virtual FlowStep step(llvm::ArrayRef<uint8_t> bytes, uint64_t rva) = 0;
};

llvm::Expected<std::unique_ptr<FlowDecoder>> createFlowDecoder(Machine machine);

struct CodeRegion {
  uint64_t rva = 0;
  llvm::ArrayRef<uint8_t> bytes;
  uint64_t end() const { return rva + bytes.size(); }
};

struct KnownStart {
  uint64_t rva = 0;
  uint64_t size = 0;  // 0: the table gives no extent; discovery finds it
};

struct DiscoveryInput {
  std::vector<CodeRegion> regions;  // executable bytes that hold functions
  // Every executable range [begin, end), stubs included: code branches nowhere else, so bytes
  // that decode to a branch outside them are data. Empty: not checked.
  std::vector<std::pair<uint64_t, uint64_t>> executable;
  std::vector<KnownStart> known;    // starts from symbols, debug info, unwind tables, exports
  std::vector<uint64_t> entries;    // the entry point
  std::vector<uint64_t> pointers;   // relocation targets: starts only where no function's control flow runs
  // The image's bytes at [rva, rva + size), empty when they are not in the file: jump tables.
  std::function<llvm::ArrayRef<uint8_t>(uint64_t rva, uint64_t size)> readBytes;
};

// How a start without a table extent was found.
enum class FoundBy : uint8_t { Table, Entry, Call, Jump, Pointer, Gap };

struct DiscoveredFunction {
  uint64_t rva = 0;
  uint64_t size = 0;  // up to the end of its last reachable instruction
  FoundBy foundBy = FoundBy::Table;
};

struct DiscoveryResult {
  std::vector<DiscoveredFunction> functions;  // by rva: every start whose extent came from code
};

// Whether the regions hold bytes that are neither in a known start's table extent nor fill: only
// then is discovery worth its decoding.
bool hasUncoveredCode(FlowDecoder &decoder, const DiscoveryInput &input);

DiscoveryResult discoverFunctions(FlowDecoder &decoder, const DiscoveryInput &input);

// Bytes of the regions in no range of `sorted` (sorted by rva) that are fill or padding between
// them: counted as covered in coverage figures.
uint64_t fillBetween(FlowDecoder &decoder, const std::vector<CodeRegion> &regions,
                     const std::vector<std::pair<uint64_t, uint64_t>> &sortedRanges);

}  // namespace hotforge::codeflow
