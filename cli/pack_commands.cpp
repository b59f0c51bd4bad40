// hotforge keygen, pack and verify: delivery units (packager/README.md, packager/FORMAT.md).
#include "commands.h"
#include "output.h"

#include "hotforge/core/error.h"
#include "hotforge/image.h"
#include "hotforge/patch_image.h"
#include "hotforge/unit.h"

#include <fmt/core.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/Path.h>

#include <map>
#include <set>

namespace hotforge::cli {

llvm::Expected<std::unique_ptr<Signer>> makeSigner(const SigningOptions &options) {
  if (!options.key.empty()) return makeKeyFileSigner(options.key);
  llvm::Expected<PublicKey> key = lift(readPublicKeyFile(options.publicKey));
  if (!key) return key.takeError();
  return makeCommandSigner(options.signCommand, *key);
}

namespace {

// The info object the manifest embeds for one image: its file name and size, and for a hotpatch
// image the baseline it fits ({build_id | time_date_stamp + check_sum, sha256}), format, machine,
// sequence and changed functions. With "baseline" and "sequence" the unit records that the image
// supersedes sequences 1..sequence-1 of that baseline; `hotforge verify --base` matches
// info.baseline.sha256 against the given binaries. Other files are packed as opaque images, but an
// empty file, a delivery unit, or a file that starts like a hotpatch image and does not read as one
// is refused: packed, it would only fail where the unit is applied.
llvm::Expected<nlohmann::json> describeImageForUnit(llvm::ArrayRef<uint8_t> bytes, const std::string &path) {
  if (bytes.empty()) return formatError("{}: the file is empty; there is nothing to pack", path);
  if (looksLikeUnit(bytes)) return formatError("{}: is a delivery unit, not an image; units do not nest", path);
  std::string name = llvm::sys::path::filename(path).str();
  nlohmann::json info = {{"file", name}, {"size", bytes.size()}};
  if (!looksLikePatchImage(bytes)) return info;
  llvm::Expected<PatchImage> image = lift(readPatchImage(bytes));
  if (!image) return formatError("{}: not a valid hotpatch image: {}", path, errorText(image.takeError()));
  const PatchBaseline &b = image->baseline;
  info["kind"] = "hotpatch-image";
  info["format"] = formatName(image->format);
  info["machine"] = machineName(image->machine);
  info["sequence"] = image->sequence;
  info["baseline"] = {{"file", b.fileName},
                      {"sha256", hexEncode(b.sha256)},
                      {"build_id", b.buildId.empty() ? nlohmann::json(nullptr) : nlohmann::json(hexEncode(b.buildId))},
                      {"time_date_stamp", b.timeDateStamp},
                      {"check_sum", b.checkSum}};
  nlohmann::json changes = nlohmann::json::array();
  for (const PatchFunction &f : image->functions)
    changes.push_back({{"name", f.name ? nlohmann::json(*f.name) : nlohmann::json(nullptr)},
                       {"kind", f.added ? "added" : "changed"},
                       {"verdict", "hotpatchable"}});
  info["changes"] = std::move(changes);
  return info;
}

struct KeygenOptions {
  std::string name;
};

struct PackCommandOptions {
  std::vector<std::string> images;
  std::string output, release;
  SigningOptions signing;
  int level = kUnitDefaultLevel;
  unsigned threads = 0;
  bool json = false;
};

struct VerifyCommandOptions {
  std::string unit, publicKey;
  std::vector<std::string> bases;
  bool json = false;
};

std::string foldedName(std::string name) {
  for (char &c : name)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return name;
}

int runKeygen(const KeygenOptions &options) {
  std::string name = options.name;
  if (llvm::StringRef(name).ends_with(".pub.pem")) name.resize(name.size() - 8);
  else if (llvm::StringRef(name).ends_with(".pem")) name.resize(name.size() - 4);
  llvm::Expected<KeyFiles> files = generateKeyFiles(name);
  if (!files) return reportError(llvm::toString(files.takeError()));
  fmt::print("wrote {} (private key, mode 0600: keep it secret) and {} (public key)\nfingerprint {}\n",
             files->privatePath, files->publicPath, files->publicKey.fingerprint());
  return kExitOk;
}

int runPack(const PackCommandOptions &options) {
  std::map<std::string, std::string> byName;  // folded entry name -> image path
  for (const std::string &path : options.images) {
    std::string name = llvm::sys::path::filename(path).str();
    auto [it, inserted] = byName.emplace(foldedName(name), path);
    if (!inserted)
      return reportError(fmt::format("{} and {} would both be entry \"{}\": entry names are the images' file names "
                                     "and must be unique (letter case aside); rename one",
                                     it->second, path, name));
  }
  std::vector<UnitEntry> entries;
  for (const std::string &path : options.images) {
    llvm::Expected<std::vector<uint8_t>> bytes = lift(readFileBytes(path, kMaxImageFileSize));
    if (!bytes) return reportError(llvm::toString(bytes.takeError()));
    llvm::Expected<nlohmann::json> info = describeImageForUnit(*bytes, path);
    if (!info) return reportError(llvm::toString(info.takeError()));
    UnitEntry entry;
    entry.name = llvm::sys::path::filename(path).str();
    entry.info = std::move(*info);
    entry.bytes = std::move(*bytes);
    entries.push_back(std::move(entry));
  }
  llvm::Expected<std::unique_ptr<Signer>> signer = makeSigner(options.signing);
  if (!signer) return reportError(llvm::toString(signer.takeError()));
  llvm::Expected<std::optional<int64_t>> created = sourceDateEpoch();
  if (!created) return reportError(llvm::toString(created.takeError()));
  PackOptions packOptions;
  packOptions.release = options.release;
  packOptions.level = options.level;
  packOptions.created = *created;
  packOptions.threads = options.threads;
  packOptions.signer = signer->get();
  llvm::Expected<std::vector<uint8_t>> unit = packUnit(entries, packOptions);
  if (!unit) return reportError(fmt::format("{}: {}", options.output, llvm::toString(unit.takeError())));
  if (llvm::Error e = writeFileAtomically(options.output, *unit, 0666, /*replace=*/true))
    return reportError(llvm::toString(std::move(e)));

  llvm::Expected<UnitDescription> description = inspectUnit(*unit);
  if (!description) return reportError(llvm::toString(description.takeError()));
  uint64_t total = 0;
  for (const UnitEntry &e : entries) total += e.bytes.size();
  if (options.json) {
    nlohmann::json doc = {{"schema", "hotforge.pack/1"},
                          {"unit", options.output},
                          {"size", unit->size()},
                          {"images_size", total},
                          {"signer", (*signer)->publicKey().fingerprint()},
                          {"manifest", description->manifest}};
    fmt::print("{}", jsonText(doc));
  } else {
    fmt::print("{}: {} image{}, {} bytes -> {} bytes (zstd level {}), signed by key {}\n", options.output,
               entries.size(), entries.size() == 1 ? "" : "s", total, unit->size(), options.level,
               (*signer)->publicKey().fingerprint());
    for (const nlohmann::json &e : description->manifest["entries"])
      fmt::print("  {:<28} {:>12} -> {:>12} bytes  sha256 {}\n", e["name"].get<std::string>(),
                 e["size"].get<uint64_t>(), e["compressed_size"].get<uint64_t>(), e["sha256"].get<std::string>());
  }
  return kExitOk;
}

std::string baselineSha256(const nlohmann::json &info) {
  if (!info.is_object() || !info.contains("baseline") || !info["baseline"].is_object()) return "";
  const nlohmann::json &baseline = info["baseline"];
  if (!baseline.contains("sha256") || !baseline["sha256"].is_string()) return "";
  return foldedName(baseline["sha256"].get<std::string>());
}

int runVerify(const VerifyCommandOptions &options) {
  llvm::Expected<PublicKey> key = lift(readPublicKeyFile(options.publicKey));
  if (!key) return reportError(llvm::toString(key.takeError()));
  llvm::Expected<std::vector<uint8_t>> bytes = lift(readFileBytes(options.unit, kMaxUnitFileSize));
  if (!bytes) return reportError(llvm::toString(bytes.takeError()));
  llvm::Expected<VerifiedUnit> unit = lift(verifyUnit(*bytes, *key));
  if (!unit) return reportError(fmt::format("{}: {}", options.unit, llvm::toString(unit.takeError())));

  // --base: every given binary must be the baseline of some entry (info.baseline.sha256).
  std::vector<std::string> problems, notes;
  std::map<std::string, std::string> baseOfEntry;  // entry name -> base path
  nlohmann::json bases = nlohmann::json::array();
  for (const std::string &path : options.bases) {
    llvm::Expected<Image> image = readImage(path);
    if (!image) {
      problems.push_back(fmt::format("--base {}: {}", path, llvm::toString(image.takeError())));
      continue;
    }
    std::string sha = hexEncode(image->identity.sha256);
    nlohmann::json matched = nlohmann::json::array();
    for (const UnitEntry &e : unit->entries)
      if (baselineSha256(e.info) == sha) {
        matched.push_back(e.name);
        baseOfEntry[e.name] = path;
      }
    if (matched.empty())
      problems.push_back(fmt::format("{}: base {} (sha256 {}) is the baseline of no entry in this unit", options.unit,
                                     path, sha));
    bases.push_back({{"path", path}, {"sha256", sha}, {"entries", matched}});
  }
  if (!options.bases.empty())
    for (const UnitEntry &e : unit->entries) {
      if (baseOfEntry.count(e.name)) continue;
      std::string sha = baselineSha256(e.info);
      notes.push_back(sha.empty() ? fmt::format("entry {} records no baseline sha256; no base to check", e.name)
                                  : fmt::format("entry {} has no matching --base (its baseline sha256 is {})", e.name,
                                                sha));
    }

  // A failed check is reported once: in the JSON document ("ok": false, "problems"), or as error
  // lines on stderr with nothing on stdout (the convention for every error). Both exit with 1.
  const nlohmann::json &m = unit->manifest;
  if (!options.json && !problems.empty()) {
    for (const std::string &problem : problems) reportError(problem);
    return kExitError;
  }
  if (options.json) {
    nlohmann::json entries = nlohmann::json::array();
    for (size_t i = 0; i < unit->entries.size(); ++i) {
      const nlohmann::json &recorded = m["entries"][i];
      nlohmann::json item = {{"name", unit->entries[i].name},
                             {"size", recorded["size"]},
                             {"compressed_size", recorded["compressed_size"]},
                             {"sha256", recorded["sha256"]},
                             {"info", unit->entries[i].info}};
      for (const char *k : {"baseline", "sequence", "supersedes"})
        if (recorded.contains(k)) item[k] = recorded[k];
      auto base = baseOfEntry.find(unit->entries[i].name);
      item["base"] = base == baseOfEntry.end() ? nlohmann::json(nullptr) : nlohmann::json(base->second);
      entries.push_back(std::move(item));
    }
    nlohmann::json doc = {{"schema", "hotforge.verify/1"},
                          {"unit", options.unit},
                          {"verified", true},
                          {"ok", problems.empty()},
                          {"signer", unit->signerFingerprint},
                          {"release", m["release"]},
                          {"created", m["created"]},
                          {"entries", entries},
                          {"bases", bases},
                          {"problems", problems},
                          {"notes", notes}};
    fmt::print("{}", jsonText(doc));
  } else {
    fmt::print("{}: signature and every hash verified: {} image{}, release {}, signed by key {}\n", options.unit,
               unit->entries.size(), unit->entries.size() == 1 ? "" : "s",
               m["release"].get<std::string>().empty() ? "(none)" : "\"" + m["release"].get<std::string>() + "\"",
               unit->signerFingerprint);
    for (size_t i = 0; i < unit->entries.size(); ++i) {
      const UnitEntry &e = unit->entries[i];
      const nlohmann::json &recorded = m["entries"][i];
      std::string extra;
      if (recorded.contains("sequence"))
        extra += fmt::format("  sequence {}", recorded["sequence"].get<uint64_t>());
      if (auto base = baseOfEntry.find(e.name); base != baseOfEntry.end()) extra += "  base " + base->second;
      fmt::print("  ok  {:<28} {:>12} bytes  sha256 {}{}\n", e.name, e.bytes.size(),
                 recorded["sha256"].get<std::string>(), extra);
    }
    for (const std::string &note : notes) fmt::print("  note: {}\n", note);
  }
  return problems.empty() ? kExitOk : kExitError;
}

}  // namespace

void addPackagerCommands(CLI::App &app, int &exitCode) {
  auto keygen = std::make_shared<KeygenOptions>();
  CLI::App *keygenCommand = app.add_subcommand(
      "keygen",
      "Make an Ed25519 signing key pair: NAME.pem (PKCS#8 private key, mode 0600) and NAME.pub.pem (public key). "
      "Existing files are never overwritten. Keys made by `openssl genpkey -algorithm ed25519` (private) and "
      "`openssl pkey -in KEY.pem -pubout` (public) work the same everywhere Hotforge takes a key.\n"
      "Exit codes: 0 ok, 1 error, 2 usage.\n"
      "Example: hotforge keygen -o release-2026\n"
      "         (writes release-2026.pem and release-2026.pub.pem)");
  keygenCommand->add_option("-o,--output", keygen->name, "NAME of the pair (a trailing .pem is dropped)")->required();
  keygenCommand->callback([keygen, &exitCode] { exitCode = runKeygen(*keygen); });

  auto pack = std::make_shared<PackCommandOptions>();
  CLI::App *packCommand = app.add_subcommand(
      "pack",
      "Pack hotpatch images into one signed, zstd-compressed delivery unit. Each image is stored under its file "
      "name, which must be unique. The unit is deterministic: the same images, options, key and SOURCE_DATE_EPOCH "
      "give a byte-identical file (the manifest's \"created\" comes from SOURCE_DATE_EPOCH, never the clock). It is "
      "written through a temporary file, so it appears whole or not at all. Layout: packager/FORMAT.md.\n"
      "Sign with a private key file (--key), or with an external command (--sign-cmd, e.g. an HSM client) that "
      "reads the bytes to sign on stdin and writes the raw 64-byte Ed25519 signature to stdout; its signature is "
      "checked against --pubkey before anything is written.\n"
      "Exit codes: 0 ok, 1 error, 2 usage.\n"
      "Example: hotforge pack core.patch.so net.patch.so -o 2026-11.hfu --key release.pem --release 2026-11\n"
      "         hotforge pack lib.patch.dll -o lib.hfu --pubkey release.pub.pem \\\n"
      "             --sign-cmd 'openssl pkeyutl -sign -inkey release.pem -rawin -in /dev/stdin'");
  packCommand->add_option("images", pack->images, "hotpatch images to pack (from hotforge build; other non-empty files are packed as opaque images)")->required();
  packCommand->add_option("-o,--output", pack->output, "the unit file to write")->required();
  CLI::Option_group *signing = packCommand->add_option_group("signing", "how to sign: exactly one of these");
  signing->add_option("--key", pack->signing.key, "Ed25519 private key, PKCS#8 PEM (hotforge keygen, openssl genpkey)");
  CLI::Option *signCommand = signing->add_option(
      "--sign-cmd", pack->signing.signCommand, "shell command: bytes to sign on stdin, raw 64-byte signature on stdout");
  signing->require_option(1);
  CLI::Option *publicKey =
      packCommand->add_option("--pubkey", pack->signing.publicKey, "public key (PEM) that --sign-cmd signs for; required with it");
  signCommand->needs(publicKey);
  publicKey->needs(signCommand);
  packCommand->add_option("--level", pack->level, fmt::format("zstd level 1..22 (default {})", kUnitDefaultLevel))
      ->check(CLI::Range(1, 22));
  packCommand->add_option("--release", pack->release, "release id recorded in the manifest (default: empty)");
  packCommand->add_option("-j,--jobs", pack->threads, "zstd worker threads (default: one per core; never changes the output)");
  packCommand->add_flag("--json", pack->json, "print a JSON summary with the manifest");
  packCommand->callback([pack, &exitCode] { exitCode = runPack(*pack); });

  auto verify = std::make_shared<VerifyCommandOptions>();
  CLI::App *verifyCommand = app.add_subcommand(
      "verify",
      "Verify a delivery unit: header bounds, the Ed25519 signature with --pubkey, the manifest, every compressed "
      "payload's SHA-256, decompression bounded by the signed sizes, every image's SHA-256, and safe entry names. "
      "With --base, each given binary must be the baseline (info.baseline.sha256) of some entry; entries with no "
      "matching base are listed as notes.\n"
      "Every problem is one line on stderr. Exit codes: 0 verified, 1 any failure, 2 usage.\n"
      "Example: hotforge verify 2026-11.hfu --pubkey release.pub.pem\n"
      "         hotforge verify 2026-11.hfu --pubkey release.pub.pem --base /usr/lib/libcore.so --json");
  verifyCommand->add_option("unit", verify->unit, "the unit file")->required();
  verifyCommand->add_option("--pubkey", verify->publicKey, "Ed25519 public key, PEM (NAME.pub.pem, openssl pkey -pubout)")
      ->required();
  verifyCommand->add_option("--base", verify->bases, "baseline binary to match against the entries (repeatable)");
  verifyCommand->add_flag("--json", verify->json, "machine-readable result");
  verifyCommand->callback([verify, &exitCode] { exitCode = runVerify(*verify); });
}

}  // namespace hotforge::cli
