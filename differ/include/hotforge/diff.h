// The differ: which functions of a patched build changed against its baseline, which are new,
// which data changed, and for each change whether it can be hotpatched. Addresses that only moved
// are compared symbolically, so code that merely moved is not a change.
#pragma once

#include "hotforge/core/machine_target.h"
#include "hotforge/image.h"

#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace hotforge {

// LineOnly: a matched function whose code differs only in the line numbers it passes to an error
// reporter; left out of the patch unless DiffOptions::carryLineChanges.
enum class ChangeKind { Changed, Added, Removed, Data, LineOnly };
enum class Verdict { Hotpatchable, NeedsRestart };

// How a base function was paired with a patched one, in the order the stages run.
enum class MatchStage {
  Name,           // equal symbol or export names, compiler suffixes (.isra.N, .cold, ...) normalised
  DebugIdentity,  // equal names that only the PDB, DWARF or a debug file gives
  Hash,           // a normalised body that is unique on both sides
  Structure,      // a unique structural signature (instructions, calls, branches, references)
  CallGraph,      // the n-th call of a matched pair targets an unmatched function on both sides
  DataPointers,   // pointers at the same place of data laid out alike target unmatched functions
};

std::string_view changeKindName(ChangeKind kind);
std::string_view verdictName(Verdict verdict);
std::string_view matchStageName(MatchStage stage);

struct MatchInfo {
  MatchStage stage = MatchStage::Name;
  double confidence = 1.0;
};

struct FunctionPair {
  size_t base = 0;     // index into the base Image's functions
  size_t patched = 0;  // index into the patched Image's functions
  MatchInfo match;
  bool changed = false;
};

// The first instruction where a changed function differs, on both sides, for people.
struct FirstDifference {
  uint32_t baseOffset = 0, patchedOffset = 0;
  std::string baseInstruction, patchedInstruction;  // "(end of function)" past the end
};

struct Change {
  ChangeKind kind = ChangeKind::Changed;
  std::optional<std::string> name;
  std::optional<AddressRange> base, patched;
  Verdict verdict = Verdict::Hotpatchable;
  std::string rule;    // stable id, e.g. "HF100"
  std::string reason;  // one sentence naming the function or object
  std::optional<MatchInfo> match;
  std::optional<FirstDifference> firstDifference;
  bool writable = false;  // data changes: the object lives in writable memory
};

// Where one reference of patch code must point once the patch is loaded: the emitter's input.
struct Binding {
  enum class Kind : uint8_t {
    Local,      // inside the same function: the copied bytes already agree
    Function,   // a function the patch carries (changed or added): `address` is its patched RVA
    Base,       // something that stays in the running base: `address` is a base RVA
    Constant,   // read-only bytes the patch carries a copy of: patched RVA and size
    JumpTable,  // a table of 32-bit offsets from its start into the function: patched RVA, size
    NewData,    // writable data the patch brings: patched RVA and size
    Unbound,    // nothing to bind to: the function needs a restart (`note` says why)
    Import,     // a symbol the base reaches through no stub or slot: `symbol` is resolved when the
                // patch loads (a call to it when `address` is a stub, else a slot holding its address)
  };
  Kind kind = Kind::Unbound;
  uint64_t address = 0;
  uint64_t size = 0;
  std::string note;
  // Import only: the symbol, its ELF version (empty when unversioned) and its PE DLL (empty on ELF).
  std::string symbol{}, version{}, library{};  // {}: brace-initialised Bindings may leave them out
};
std::string_view bindingKindName(Binding::Kind kind);

// One reference of carried code as the emitter writes it (as Zucchini's reference readers hand
// references to a generic writer): where its address lives in the function's bytes, what it
// reaches in the patched build, and where that must be once the patch is loaded.
struct BoundReference {
  uint32_t offset = 0;     // of its instruction, from the function's start
  InstructionField field;  // kind None: no field of its own (it adds an offset to `offsetFrom`)
  uint64_t target = 0;     // patched RVA
  // The address an earlier reference formed that this one adds an offset to (Arm64 section
  // anchors: ADRP+ADD of the anchor, then ADD or LDR/STR #off): the emitter keeps the two the
  // same distance apart. 0: none.
  uint64_t offsetFrom = 0;
  // With offsetFrom: an index was added to that address in a register before the offset, so the
  // access lands at target plus the index (target is where index 0 lands).
  bool indexed = false;
  Binding binding;
};

// An instruction the linker moved out of line (Arm64, GNU ld's erratum 843419 fix: `b veneer`
// where the veneer holds the instruction and branches back): the patch carries the instruction
// in the branch's place, as the differ read it, since the veneer's way back leads into the base.
struct OutOfLineInstruction {
  uint32_t offset = 0;  // of the branch, from the function's start
  uint32_t word = 0;    // the instruction it stands for
};

// Everything the emitter needs of one function the patch carries; it decodes no code itself.
struct FunctionBindings {
  size_t patched = 0;  // index into the patched Image's functions
  std::optional<size_t> base;  // its base counterpart, for changed functions
  bool splitPart = false;      // a part (.cold) entered only from its function: never redirected
  std::vector<BoundReference> references;  // in instruction order
  std::vector<OutOfLineInstruction> outOfLine;
  // For a function whose base counterpart is redirected (`base` set, not a split part): the
  // lowest offset after the entry that the base function's own branches reach (UINT64_MAX: none),
  // and the fill near it in the base, where a redirect may put a jump: byte ranges of its code
  // section that no function owns and that hold padding only (int3, nops), within 256 bytes of
  // it (a run that crosses that edge is taken whole up to 256 bytes further).
  uint64_t baseBranchFloor = UINT64_MAX;
  std::vector<AddressRange> baseFill;
};

struct DiffSummary {
  size_t matched = 0, changed = 0, added = 0, removed = 0, needsRestart = 0;
};

struct Diff {
  std::vector<FunctionPair> pairs;  // every matched pair, sorted by base index
  std::vector<size_t> addedFunctions;    // patched indices with no base counterpart
  std::vector<size_t> removedFunctions;  // base indices with no patched counterpart
  std::vector<Change> changes;           // what a release engineer reads; sorted, deterministic
  std::vector<FunctionBindings> bindings;  // every changed and added function (with its parts)
  // Data the two builds share: a patched object (or an unnamed address) and where the base has it.
  struct DataPair {
    AddressRange patched;
    uint64_t baseRva = 0;
  };
  std::vector<DataPair> dataPairs;  // sorted by patched RVA
  // A relocated pointer inside data the patch copies (a Constant or NewData binding, or data such
  // a pointer reaches in turn): what it points at in the patched build, bound as code references
  // are (Function: a carried function; Constant/NewData: another copy; Base: the base's).
  struct DataPointer {
    uint64_t target = 0;  // patched RVA pointed at
    Binding binding;
  };
  std::map<uint64_t, DataPointer> dataPointers;  // by the patched RVA of the pointer
  DiffSummary summary;
  std::vector<std::string> log;  // one line per matching stage: how many pairs it found

  bool needsRestart() const { return summary.needsRestart != 0; }
};

struct DiffOptions {
  unsigned threads = 0;  // 0: one per core
  // Below this share of matched functions (of the larger side) the two binaries are taken to be
  // unrelated programs.
  double minimumMatchedShare = 0.5;
  // Functions whose only change is a line number passed to an error reporter (__LINE__ after an
  // edit above them) are patched too, as changed functions (HF100), instead of listed (HF103).
  bool carryLineChanges = false;
};

// Fails when the two images have different formats or machines, or look like unrelated programs.
llvm::Expected<Diff> diffImages(const Image &base, const Image &patched, const DiffOptions &options = {});

constexpr const char *kDiffSchema = "hotforge.diff/1";
nlohmann::json toJson(const Diff &diff, const Image &base, const Image &patched);

// Rule ids: stable, documented in docs/diff-json.md.
namespace rules {
inline constexpr const char *kFunctionChanged = "HF100";
inline constexpr const char *kFunctionAdded = "HF101";
inline constexpr const char *kFunctionRemoved = "HF102";
inline constexpr const char *kLineNumbersOnly = "HF103";
inline constexpr const char *kReadOnlyDataChanged = "HF200";
inline constexpr const char *kDataAdded = "HF201";
inline constexpr const char *kDataRemoved = "HF202";
inline constexpr const char *kWritableDataChanged = "HF210";
inline constexpr const char *kDataSizeChanged = "HF211";
inline constexpr const char *kTlsLayoutChanged = "HF212";
inline constexpr const char *kLayoutChanged = "HF213";
inline constexpr const char *kUnboundReference = "HF300";
inline constexpr const char *kNewImport = "HF301";
}  // namespace rules

}  // namespace hotforge
