#include "pe_session.h"

#include "pe_file.h"

#include "hotforge/applier.h"
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"

#include <cstdio>
#include <cstdlib>

namespace hotforge::pe {
namespace {

// A string argument's text from just after its opening quote; `at` ends after the closing quote.
Outcome<std::string> parseQuoted(std::string_view spec, size_t &at) {
  std::string text;
  for (; at < spec.size(); ++at) {
    char c = spec[at];
    if (c == '"') {
      ++at;
      return text;
    }
    if (c != '\\') {
      text.push_back(c);
      continue;
    }
    if (++at == spec.size()) break;
    switch (spec[at]) {
    case 't': text.push_back('\t'); break;
    case 'n': text.push_back('\n'); break;
    case '\\': case '"': text.push_back(spec[at]); break;
    default: return fail("unknown escape \\", std::string(1, spec[at]), " in ", std::string(spec));
    }
  }
  return fail("unterminated string in ", std::string(spec));
}

std::string quoted(const std::string &text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '\\' || c == '"') out += {'\\', c};
    else out.push_back(c);
  }
  return out + "\"";
}

// The image fits this base: format, machine and the identity the records carry (docs/format.md,
// "What a loader does", step 1).
Status checkBaseline(const PatchImage &image, Machine machine, std::span<const uint8_t> baseFile) {
  std::optional<Format> baseFormat = findFormat([&](const ContainerTarget &c) { return c.holds(baseFile); });
  if (!baseFormat) return fail("the base is not a file of any known container");
  if (image.format != *baseFormat || image.machine != machine)
    return fail("the image is for ", formatName(image.format), " ", machineName(image.machine), ", the base is ",
                formatName(*baseFormat), " ", machineName(machine));
  Outcome<PeFile> base = readPeFile(baseFile);
  if (!base) return std::move(base).failure();
  const PatchBaseline &want = image.baseline;
  if (base->timeDateStamp != want.timeDateStamp || base->checkSum != want.checkSum || base->sizeOfImage != want.sizeOfImage)
    return fail("the base is not the image's baseline: TimeDateStamp/CheckSum/SizeOfImage ", hexAddress(base->timeDateStamp),
                "/", hexAddress(base->checkSum), "/", hexAddress(base->sizeOfImage), ", the image wants ",
                hexAddress(want.timeDateStamp), "/", hexAddress(want.checkSum), "/", hexAddress(want.sizeOfImage));
  if (fileSha256(baseFile) != want.sha256)
    return fail("the base's SHA-256 is ", hexEncode(fileSha256(baseFile)), ", the image wants ", hexEncode(want.sha256));
  return success();
}

// The applier core's backend for a PeProcess. No call runs while the redirects are written
// (calls run between the phases), so there is no thread to stop: each redirect is one plain
// write, no thread is inside the overwritten bytes, and quiescent redirects hold too.
class PeBackend final : public ApplierBackend {
public:
  explicit PeBackend(PeProcess &process) : process_(process) {}

  std::string processName() const override { return "the base's process"; }
  bool read(uint64_t address, std::span<uint8_t> out) override {
    process_.read(address, out);
    return true;
  }
  Status writeCode(uint64_t address, std::span<const uint8_t> bytes) override { return process_.writeCode(address, bytes); }
  std::vector<int> threads() override { return {}; }
  Outcome<bool> requestStop(int) override { return false; }
  Status awaitStops() override { return success(); }
  std::span<const StoppedThread> stoppedThreads() override { return {}; }
  std::span<const uint64_t> stackWords(const StoppedThread &) override { return {}; }
  void resumeAll() override {}
  // Each applier knows its own reach (x64: 2 GiB above the base; Arm64: 4 GiB).
  Outcome<uint64_t> reserveNear(uint64_t, uint64_t size, uint64_t) override { return process_.reserveNear(uint32_t(size)); }
  Status install(const PatchImage &image, uint64_t address, std::span<const uint8_t> laidOut) override {
    return process_.installImage(image, address, laidOut);
  }
  void release(const PatchImage &image, uint64_t address, bool) override { process_.releaseImage(image, address); }
  Outcome<uint64_t> resolveImport(const PatchImport &import) override { return process_.importAddress(import); }

private:
  PeProcess &process_;
};

// Checks every redirect's expected bytes, resolves the image's new imports, maps the image near
// the base with its fixups applied, then writes the redirects (steps 2 to 6; nothing is written
// unless every check passes).
Outcome<PreparedImage> applyImage(PeProcess &process, const PatchImage &image) {
  PeBackend backend(process);
  Outcome<PreparedImage> prepared = stageImage(backend, image, process.baseAddress(), /*checkEntries=*/true);
  if (!prepared) return std::move(prepared).failure();
  StopReport report;
  if (Status written = writeEntries(backend, prepared->changes, EntryDirection::In, {}, report); !written) {
    backend.release(image, prepared->address, /*installed=*/true);
    return std::move(written).failure();
  }
  return prepared;
}

Status revertImage(PeProcess &process, const PatchImage &image, const PreparedImage &applied) {
  PeBackend backend(process);
  StopReport report;
  if (Status restored = writeEntries(backend, applied.changes, EntryDirection::Out, {}, report); !restored) return restored;
  backend.release(image, applied.address, /*installed=*/true);
  return success();
}

// Makes every call on a new thread and prints one line each, `prefix` first.
Status runCalls(PeProcess &process, const std::vector<Call> &calls, const char *prefix) {
  Status outcome = success();
  process.onNewThread([&] {
    for (const Call &call : calls) {
      Outcome<uint64_t> function = process.exportAddress(call.function);
      if (!function) {
        outcome = std::move(function).failure();
        return;
      }
      std::vector<uint64_t> arguments;
      for (const CallArgument &argument : call.arguments)
        arguments.push_back(argument.isString ? process.placeString(argument.text) : uint64_t(argument.number));
      Outcome<uint64_t> result = process.call(*function, arguments);
      if (!result) {
        outcome = fail(call.function, "(", call.written, "): ", result.error());
        return;
      }
      std::string value = call.returnsString ? quoted(process.readString(*result)) : std::to_string(int32_t(*result));
      std::printf("%s%s(%s)=%s\n", prefix, call.function.c_str(), call.written.c_str(), value.c_str());
    }
  });
  std::fflush(stdout);
  return outcome;
}

int usage() {
  std::fprintf(stderr, "usage: APPLIER BASE.dll IMAGE.dll|- CALL...\n"
                       "  CALL is NAME[:ARG,...][:str], e.g. table_get:16 checksum_text:\"a\\tb\" status_text:1:str\n");
  return 2;
}

int failed(const std::string &message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

}  // namespace

Outcome<Call> parseCall(std::string_view spec) {
  Call call;
  size_t colon = spec.find(':');
  call.function = std::string(spec.substr(0, colon));
  if (call.function.empty()) return fail("no function name in ", std::string(spec));
  std::string_view rest = colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1);
  constexpr std::string_view kStringResult = "str";
  if (rest == kStringResult || rest.ends_with(":str")) {
    call.returnsString = true;
    rest.remove_suffix(std::min(rest.size(), kStringResult.size() + 1));
  }
  call.written = std::string(rest);
  for (size_t at = 0; at < rest.size();) {
    CallArgument argument;
    if (rest[at] == '"') {
      argument.isString = true;
      Outcome<std::string> text = parseQuoted(rest, ++at);
      if (!text) return std::move(text).failure();
      argument.text = std::move(*text);
    } else {
      size_t end = std::min(rest.find(',', at), rest.size());
      std::string number(rest.substr(at, end - at));
      char *stop = nullptr;
      argument.number = std::strtoll(number.c_str(), &stop, 0);
      if (number.empty() || *stop) return fail("argument ", number, " of ", call.function, " is neither a number nor a string");
      at = end;
    }
    call.arguments.push_back(std::move(argument));
    if (at < rest.size() && rest[at++] != ',') return fail("expected , after an argument in ", std::string(spec));
  }
  if (call.arguments.size() > 8) return fail(call.function, ": at most 8 arguments");
  return call;
}

int runApplier(int argc, char **argv, const ProcessOpener &open) {
  if (argc < 4) return usage();
  std::string basePath = argv[1], imagePath = argv[2];
  std::vector<Call> calls;
  for (int i = 3; i < argc; ++i) {
    Outcome<Call> call = parseCall(argv[i]);
    if (!call) {
      std::fprintf(stderr, "error: %s\n", call.error().c_str());
      return usage();
    }
    calls.push_back(std::move(*call));
  }
  Outcome<std::unique_ptr<PeProcess>> opened = open(basePath);
  if (!opened) return failed(opened.error());
  PeProcess &process = **opened;
  if (imagePath == "-") {
    Status ran = runCalls(process, calls, "");
    return ran ? 0 : failed(ran.error());
  }
  Outcome<std::vector<uint8_t>> baseFile = readWholeFile(basePath), imageFile = readWholeFile(imagePath);
  if (!baseFile) return failed(baseFile.error());
  if (!imageFile) return failed(imageFile.error());
  Outcome<PatchImage> image = readPatchImage(*imageFile);
  if (!image) return failed(imagePath + ": " + image.error());
  if (Status fits = checkBaseline(*image, process.machine(), *baseFile); !fits) return failed(fits.error());

  if (Status ran = runCalls(process, calls, "before "); !ran) return failed(ran.error());
  Outcome<PreparedImage> applied = applyImage(process, *image);
  if (!applied) return failed("applying " + imagePath + ": " + applied.error());
  std::fprintf(stderr, "applied %s at %s (base at %s): %zu redirects, %zu fixups\n", imagePath.c_str(),
               hexAddress(applied->address).c_str(), hexAddress(process.baseAddress()).c_str(),
               image->redirects.size(), image->fixups.size());
  if (Status ran = runCalls(process, calls, "patched "); !ran) return failed(ran.error());
  if (Status reverted = revertImage(process, *image, *applied); !reverted) return failed("reverting: " + reverted.error());
  if (Status ran = runCalls(process, calls, "reverted "); !ran) return failed(ran.error());
  return 0;
}

}  // namespace hotforge::pe
