// Shared between the planner, the record codec and the container writers.
#pragma once

#include "hotforge/core/error.h"
#include "hotforge/patch_image.h"
#include "hotforge/core/bytes.h"

#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hotforge::emitter {

constexpr uint32_t kPageSize = 0x1000;

// The emitter's refusal rules (docs/diff-json.md, "Build refusals").
namespace rule {
// Code of the patch reaches a function it does not carry.
inline constexpr const char *kFunctionNotCarried = "HF401";
// Copied data points at a function the patch does not carry.
inline constexpr const char *kDataPointsAtFunction = "HF402";
// Copied data holds a pointer that cannot be bound.
inline constexpr const char *kDataPointerUnbound = "HF403";
// An offset from a base address cannot reach the base's object.
inline constexpr const char *kOffsetBeyondEncoding = "HF404";
// An offset from an anchor cannot be rewritten to reach data kept apart from it.
inline constexpr const char *kOffsetNotRewritable = "HF405";
// An Arm64 ADR or literal load of base data out of its reach.
inline constexpr const char *kOutOfReach = "HF406";
// A reference the diff left unbound.
inline constexpr const char *kUnboundReference = "HF407";
// An x64 short branch too far from the end for an island.
inline constexpr const char *kShortBranchNoIsland = "HF408";
// A short branch out of the function with no fixup kind.
inline constexpr const char *kShortBranchNotReaimed = "HF409";
// The function's entry cannot take the redirect.
inline constexpr const char *kRedirectDoesNotFit = "HF410";
// An exception handler or type the base does not have.
inline constexpr const char *kHandlerNotInBase = "HF411";
// A PE exception handler's data that cannot be re-aimed.
inline constexpr const char *kHandlerDataNotReaimed = "HF412";
// Unwind data (PE .pdata/.xdata, .eh_frame, LSDA) not carried.
inline constexpr const char *kUnwindNotCarried = "HF413";
// One Arm64 ADRP would have to point at two pages.
inline constexpr const char *kSharedPageSplits = "HF414";
// An indexed access from an anchor lands on data kept apart from the anchor.
inline constexpr const char *kIndexedOffsetSplits = "HF415";
}  // namespace rule

// One refusal as an error (the planner gathers them all before it refuses).
template <typename... Args>
llvm::Error refuse(const char *ruleId, fmt::format_string<Args...> format, Args &&...args) {
  return llvm::make_error<RefusalError>(
      BuildRefusal{false, {{ruleId, std::nullopt, fmt::format(format, std::forward<Args>(args)...)}}});
}

// What a container writer asks of the planner while the image is laid out.
class PlannedImage {
public:
  virtual ~PlannedImage() = default;
  virtual const Image &base() const = 0;
  virtual const Image &patched() const = 0;
  virtual PatchImage &image() = 0;
  // Patched rva -> image rva of every carried function.
  virtual std::vector<std::pair<uint64_t, uint64_t>> carriedFunctions() const = 0;
  // Where the base holds what the patched build holds at `patchedRva`.
  virtual std::optional<uint64_t> baseCounterpart(uint64_t patchedRva) = 0;
  // An absolute jump in .text to `target` (an RVA in `space`); its image RVA.
  virtual uint32_t addAbsoluteJump(uint64_t target, FixupSpace space) = 0;
  // Refuses the patch (the planner gathers every refusal before it fails): for `rule`, or with
  // the refusals `error` carries.
  virtual void refuse(const char *rule, std::string reason, std::optional<std::string> name = std::nullopt) = 0;
  virtual void refuse(llvm::Error error) = 0;
};

// One writer per container format (the emitter's side of ContainerTarget): the unwind data the
// container carries for the new code, and the file. Made by containerWriter(), the one switch
// over Format in the emitter.
class ContainerWriter {
public:
  virtual ~ContainerWriter() = default;
  // Once the code is bound: code in .text the unwind data needs (PE: stubs to exception
  // handlers that stay in the base).
  virtual void addUnwindCode(PlannedImage &plan) = 0;
  // Once the planner's sections are placed, from `rva` on: sections the unwind data needs (ELF:
  // .eh_frame and the LSDAs).
  virtual llvm::Error addUnwindSections(PlannedImage &plan, uint32_t rva) = 0;
  // Fills image.file (and image.sizes.file).
  virtual llvm::Error write(PlannedImage &plan) = 0;
};
std::unique_ptr<ContainerWriter> containerWriter(Format format);
std::unique_ptr<ContainerWriter> elfWriter();
std::unique_ptr<ContainerWriter> peWriter();

// Container writers: fill image.file (and image.sizes.file) from the sections and records.
llvm::Error writeElfContainer(PatchImage &image);
class PeUnwindCopy;
// The PE writer also needs the base, for its hashes and first bytes, and the unwind data of the
// carried functions (pe_unwind.h).
struct PeContainerInput {
  const Image *base = nullptr;
  PeUnwindCopy *unwind = nullptr;
  std::map<uint64_t, uint32_t> handlerStubs;  // patched RVA of an exception handler -> its stub in .text
};
llvm::Error writePeContainer(PatchImage &image, const PeContainerInput &input);

// Copies the unwind entries (CIE/FDE, with LSDAs) of the carried functions from the patched
// build's .eh_frame into a new .eh_frame placed at `sectionRva`. `imageRvaOf` maps a patched RVA
// inside a carried function to its image RVA; fixups for personality routines and type tables
// that stay in the base are appended to `fixups`.
struct EhFrameRequest {
  const Image *patched = nullptr;
  std::vector<std::pair<uint64_t, uint64_t>> functions;  // patched rva -> image rva, per carried function
  std::function<std::optional<uint64_t>(uint64_t patchedRva)> baseCounterpart;  // for data in the base
};
llvm::Expected<std::vector<uint8_t>> buildEhFrame(const EhFrameRequest &request, uint32_t sectionRva,
                                                  uint32_t lsdaSectionRva, std::vector<uint8_t> &lsdaBytes,
                                                  std::vector<PatchFixup> &fixups);

}  // namespace hotforge::emitter
