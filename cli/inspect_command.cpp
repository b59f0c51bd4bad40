// hotforge inspect: what Hotforge reads from a binary.
#include "hotforge/core/container_target.h"
#include "commands.h"
#include "output.h"

#include "hotforge/core/error.h"
#include "hotforge/image.h"
#include "hotforge/image_json.h"
#include "hotforge/patch_image.h"
#include "hotforge/unit.h"

#include <llvm/Support/FileSystem.h>

#include <fmt/core.h>

#include <map>

namespace hotforge::cli {
namespace {

struct InspectOptions {
  std::string input;
  ImageReadOptions read;
  bool json = false;
  bool functions = false;
  bool relocations = false;
};

void printText(const Image &image, const InspectOptions &options) {
  const Identity &id = image.identity;
  fmt::print("{}: {} {}, image base {:#x}, entry rva {:#x}\n", image.path, formatName(image.format),
             machineName(image.machine), image.imageBase, image.entryRva);
  fmt::print("  sha256      {}\n", hexEncode(id.sha256));
  if (containerTarget(image.format).identifiedByBuildId()) {
    fmt::print("  build-id    {}\n", id.buildId.empty() ? "(none)" : hexEncode(id.buildId));
  } else {
    fmt::print("  timestamp   {:#010x}  checksum {:#010x}  size of image {:#x}\n", id.timeDateStamp, id.checkSum,
               id.sizeOfImage);
    if (id.codeView)
      fmt::print("  codeview    {} guid {} age {}\n", id.codeView->pdbPath, guidString(id.codeView->guid), id.codeView->age);
  }
  if (!image.debugInfoPath.empty()) fmt::print("  debug info  {}\n", image.debugInfoPath);
  if (image.loadConfig)
    fmt::print("  load config size {:#x}, guard flags {:#x}, hot patch table offset {:#x}\n", image.loadConfig->size,
               image.loadConfig->guardFlags, image.loadConfig->hotPatchTableOffset);

  fmt::print("sections ({}):\n", image.sections.size());
  for (const Section &s : image.sections) {
    if (!s.loaded) continue;
    fmt::print("  {:<20} rva {:#10x} size {:#9x} {}\n", s.name, s.rva, s.size, permissionsText(s.permissions));
  }

  std::map<std::string_view, size_t> bySource;
  size_t named = 0;
  for (const Function &f : image.functions) {
    ++bySource[functionSourceName(f.source)];
    named += f.name.has_value();
  }
  std::string sources;
  for (auto &[name, count] : bySource) sources += fmt::format("{}{} {}", sources.empty() ? "" : ", ", name, count);
  fmt::print("functions: {} ({} named; boundaries from {})\n", image.functions.size(), named,
             sources.empty() ? "nothing" : sources);
  const CodeCoverage &coverage = image.coverage;
  fmt::print("code coverage: {:.1f}% of {} executable bytes (functions {}, fill {}; {})\n", 100 * coverage.ratio(),
             coverage.codeBytes, coverage.functionBytes, coverage.fillBytes,
             coverage.discoveryRan ? "functions discovered from code" : "the tables cover the code");
  size_t tls = 0;
  for (const DataObject &d : image.dataObjects) tls += d.threadLocal;
  fmt::print("data objects: {} ({} thread-local), imports: {}, relocations: {}\n", image.dataObjects.size(), tls,
             image.imports.size(), image.relocations.size());
  for (const std::string &warning : image.warnings) fmt::print("warning: {}\n", warning);

  if (options.functions) {
    fmt::print("\n{:>10} {:>8}  {:<10} {}\n", "rva", "size", "source", "name");
    for (const Function &f : image.functions) {
      fmt::print("{:#10x} {:8}  {:<10} {}\n", f.range.rva, f.range.size, functionSourceName(f.source),
                 f.name ? *f.name : "?");
      for (const AddressRange &part : f.parts)
        fmt::print("{:#10x} {:8}  {:<10}   (part of the function above)\n", part.rva, part.size, "");
    }
  }
  if (options.relocations) {
    fmt::print("\n{:>10}  {:<28} {}\n", "rva", "type", "symbol");
    for (const Relocation &r : image.relocations)
      fmt::print("{:#10x}  {:<28} {}{:+}\n", r.rva, r.typeName, r.symbol ? *r.symbol : "", r.addend);
  }
}

void printPatchImage(const PatchImage &p, const std::string &path) {
  const PatchBaseline &b = p.baseline;
  fmt::print("{}: hotpatch image (format {}), {} {}, sequence {}, {} bytes mapped\n", path, kPatchFormatVersion,
             formatName(p.format), machineName(p.machine), p.sequence, p.imageSize);
  fmt::print("  baseline   {} sha256 {}\n", b.fileName, hexEncode(b.sha256));
  if (!b.buildId.empty()) fmt::print("             build-id {}\n", hexEncode(b.buildId));
  if (!containerTarget(p.format).identifiedByBuildId())
    fmt::print("             timestamp {:#010x} checksum {:#010x}\n", b.timeDateStamp, b.checkSum);
  fmt::print("redirects ({}):\n", p.redirects.size());
  for (const PatchRedirect &r : p.redirects)
    fmt::print("  {:<28} base {:#x}+{} -> image {:#x} by {} at +{} (stub {:#x}), overwrites {:+}+{}{}, expects {}\n",
               r.name.value_or("?"), r.baseRva, r.baseSize, r.patchRva, redirectKindName(r.kind), r.entryOffset, r.stubRva,
               r.overwrittenOffset, r.overwrittenSize, r.quiescent ? ", only with no thread inside" : "",
               hexEncode(r.expected));
  fmt::print("functions ({}):\n", p.functions.size());
  for (const PatchFunction &f : p.functions)
    fmt::print("  {:<28} image {:#x}+{} from patched {:#x}{}\n", f.name.value_or("?"), f.rva, f.size, f.patchedRva,
               f.added ? " (new)" : "");
  fmt::print("fixups ({}):\n", p.fixups.size());
  for (const PatchFixup &f : p.fixups)
    fmt::print("  {:#8x} {:<16} -> {:<6} {:#x}{}\n", f.site, fixupKindName(f.kind), fixupSpaceName(f.space), f.target,
               f.veneer ? fmt::format(" (veneer {:#x})", f.veneer) : "");
  fmt::print("imports ({}):\n", p.imports.size());
  for (size_t i = 0; i < p.imports.size(); ++i) fmt::print("  {:>4} {}\n", i, importDisplayName(p.imports[i]));
}

}  // namespace

void addInspectCommand(CLI::App &app, int &exitCode) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App *command = app.add_subcommand(
      "inspect",
      "Show what Hotforge reads from a binary: format, machine, identity (build-id, PE timestamp and "
      "checksum, CodeView/PDB, SHA-256), sections, functions with where each boundary came from, "
      "data objects, imports, relocations and the PE load config.\n"
      "Example: hotforge inspect build/app --functions\n"
      "         hotforge inspect app.dll --pdb app.pdb --json > app.json");
  command->add_option("binary", options->input, "ELF64 or PE32+ image (x64 or Arm64)")->required();
  command->add_option("--pdb", options->read.pdbPath, "PE: read this PDB (default: the one the CodeView record names, "
                                                      "or the same file name next to the image)");
  command->add_option("--debug-file", options->read.debugFile, "ELF: separate debug file with symbols and DWARF");
  command->add_option("--debug-dir", options->read.debugDir,
                      "ELF: directory searched for .gnu_debuglink names and .build-id/xx/yyyy.debug");
  command->add_flag("--json", options->json, "machine-readable output (schema in docs/inspect-json.md)");
  command->add_flag("--functions", options->functions, "list every function (text output)");
  command->add_flag("--relocations", options->relocations, "list every relocation");
  command->callback([options, &exitCode] {
    llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> file = readFileBuffer(options->input, kMaxUnitFileSize);
    if (!file) return void(exitCode = reportError(llvm::toString(file.takeError())));
    {  // a delivery unit or a hotpatch image; anything else is read as a binary
      llvm::ArrayRef<uint8_t> bytes(reinterpret_cast<const uint8_t *>((*file)->getBufferStart()), (*file)->getBufferSize());
      if (looksLikeUnit(bytes)) {  // a delivery unit: header and manifest, unverified
        llvm::Expected<UnitDescription> unit = inspectUnit(bytes);
        if (!unit) return void(exitCode = reportError(options->input + ": " + llvm::toString(unit.takeError())));
        fmt::print("{}", options->json ? jsonText(describeUnitJson(*unit, options->input))
                                       : describeUnitText(*unit, options->input));
        return void(exitCode = kExitOk);
      }
      if (looksLikePatchImage(bytes)) {
        llvm::Expected<PatchImage> patch = lift(readPatchImage(bytes));
        if (!patch) return void(exitCode = reportError(options->input + ": " + llvm::toString(patch.takeError())));
        if (options->json) fmt::print("{}", jsonText(toJson(*patch)));
        else printPatchImage(*patch, options->input);
        return void(exitCode = kExitOk);
      }
    }
    llvm::Expected<Image> image = readImage(std::move(*file), options->read);
    if (!image) {
      exitCode = reportError(llvm::toString(image.takeError()));
      return;
    }
    if (options->json)
      fmt::print("{}", jsonText(toJson(*image, {options->relocations})));
    else
      printText(*image, *options);
    exitCode = kExitOk;
  });
}

}  // namespace hotforge::cli
