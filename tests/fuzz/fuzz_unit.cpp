// Feeds arbitrary bytes to the delivery-unit reader: verifyUnit with a fixed test public key,
// inspectUnit and its text and JSON descriptions, and every check verifyUnit makes after the
// signature (so the manifest and payload checks are fuzzed even though the fuzzer cannot sign).
//
// With HOTFORGE_FUZZ_UNIT_SEEDS=DIR the target first writes valid units signed with the fixed
// test key into DIR, as a seed corpus (tests/fuzz/run.sh does this).
#include "hotforge/core/unit_checks.h"
#include "hotforge/unit.h"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

std::array<uint8_t, 32> testSeed() {
  std::array<uint8_t, 32> seed{};
  for (size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<uint8_t>(0x5a ^ i);
  return seed;
}

hotforge::Signer &testSigner() {
  static std::unique_ptr<hotforge::Signer> signer = [] {
    llvm::Expected<std::unique_ptr<hotforge::Signer>> s = hotforge::makeSeedSigner(testSeed());
    if (!s) {
      std::fprintf(stderr, "fuzz_unit: %s\n", llvm::toString(s.takeError()).c_str());
      std::abort();  // the harness itself is broken, not the input
    }
    return std::move(*s);
  }();
  return *signer;
}

void writeSeeds(const std::string &dir) {
  using hotforge::UnitEntry;
  std::vector<std::vector<UnitEntry>> sets;
  std::vector<uint8_t> code(600);
  for (size_t i = 0; i < code.size(); ++i) code[i] = static_cast<uint8_t>((i * 7) ^ (i >> 3));
  sets.push_back({UnitEntry{"core.so", code, {{"file", "core.so"}, {"size", code.size()}}}});
  sets.push_back({UnitEntry{"a.dll", {'M', 'Z'}, nlohmann::json::object()},
                  UnitEntry{"b.so", code,
                            {{"baseline", {{"sha256", std::string(64, 'a')}, {"build_id", "0102"}}}, {"sequence", 3}}},
                  UnitEntry{"empty", {}, nlohmann::json::object()}});
  sets.push_back({UnitEntry{"x", std::vector<uint8_t>(4000, 0), {{"note", "zeros"}, {"list", {1, 2.5, nullptr}}}}});
  int n = 0;
  for (const std::vector<UnitEntry> &entries : sets) {
    for (int level : {1, 19}) {
      hotforge::PackOptions options;
      options.level = level;
      options.release = n % 2 ? "2026-11" : "";
      options.created = n % 3 ? std::optional<int64_t>(1700000000) : std::nullopt;
      options.threads = 1;
      options.signer = &testSigner();
      llvm::Expected<std::vector<uint8_t>> unit = hotforge::packUnit(entries, options);
      if (!unit) {
        std::fprintf(stderr, "fuzz_unit: seed: %s\n", llvm::toString(unit.takeError()).c_str());
        continue;
      }
      std::string path = dir + "/seed-unit-" + std::to_string(n++);
      if (std::FILE *f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(unit->data(), 1, unit->size(), f);
        std::fclose(f);
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  testSigner();
  if (const char *dir = std::getenv("HOTFORGE_FUZZ_UNIT_SEEDS")) writeSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::ArrayRef<uint8_t> bytes(data, size);
  (void)hotforge::looksLikeUnit(bytes);
  hotforge::Outcome<hotforge::VerifiedUnit> verified = hotforge::verifyUnit(bytes, testSigner().publicKey());
  if (verified)
    for (const hotforge::UnitEntry &e : verified->entries) (void)e.bytes.size();
  llvm::Expected<hotforge::UnitDescription> shown = hotforge::inspectUnit(bytes);
  if (shown) {
    (void)hotforge::describeUnitText(*shown, "fuzz");
    (void)hotforge::describeUnitJson(*shown, "fuzz").dump();
  } else {
    llvm::consumeError(shown.takeError());
  }
  (void)hotforge::unit_detail::checkUnitContentsWithoutSignature(bytes);
  return 0;
}
