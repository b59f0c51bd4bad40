// The .hotpatch record section, the same in both containers (docs/format.md):
//   header (64 bytes), baseline identity (112 bytes), redirects (64 bytes each),
//   fixups (24 bytes each), functions (24 bytes each), imports (12 bytes each), string table.
#include "hotforge/core/bytes.h"
#include "hotforge/core/container_target.h"
#include "hotforge/core/machine_target.h"
#include "hotforge/core/patch_format.h"

#include <algorithm>
#include <cstring>

namespace hotforge {
namespace {

constexpr char kMagic[8] = {'H', 'F', 'P', 'A', 'T', 'C', 'H', 0};
constexpr size_t kHeaderSize = 64, kBaselineSize = 112, kRedirectSize = 64, kFixupSize = 24, kFunctionSize = 24,
                 kImportSize = 12;
constexpr size_t kMaxBuildId = 32;
constexpr uint32_t kNoName = 0xffffffff;

class Strings {
public:
  ByteWriter table;
  uint32_t add(const std::optional<std::string> &s) {
    if (!s) return kNoName;
    return add(*s);
  }
  uint32_t add(const std::string &s) {
    uint32_t at = uint32_t(table.size());
    table.raw(std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(s.data()), s.size()));
    table.u8(0);
    return at;
  }
};

}  // namespace

std::vector<uint8_t> encodeRecords(const PatchImage &image) {
  Strings strings;
  ByteWriter w;
  w.raw(std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(kMagic), 8));
  w.u32(kPatchFormatVersion);
  w.u16(containerTarget(image.format).recordCode());
  w.u16(machineTarget(image.machine).recordCode());
  w.u32(image.sequence);
  w.u32(image.imageSize);
  w.u32(uint32_t(image.redirects.size()));
  w.u32(uint32_t(image.fixups.size()));
  w.u32(uint32_t(image.functions.size()));
  size_t stringSizeAt = w.size();
  w.u32(0);  // string table size, patched below
  w.u32(uint32_t(image.imports.size()));
  w.zeros(kHeaderSize - w.size());

  const PatchBaseline &b = image.baseline;
  w.raw(b.sha256);
  w.u8(uint8_t(std::min(b.buildId.size(), kMaxBuildId)));
  std::vector<uint8_t> id(b.buildId.begin(), b.buildId.begin() + std::min(b.buildId.size(), kMaxBuildId));
  id.resize(kMaxBuildId);
  w.raw(id);
  w.zeros(3);
  w.u32(b.timeDateStamp);
  w.u32(b.checkSum);
  w.u32(b.sizeOfImage);
  w.u32(strings.add(b.fileName));
  w.zeros(kHeaderSize + kBaselineSize - w.size());

  for (const PatchRedirect &r : image.redirects) {
    size_t start = w.size();
    w.u32(r.baseRva);
    w.u32(r.baseSize);
    w.u32(r.patchRva);
    w.u32(r.stubRva);
    w.u32(strings.add(r.name));
    w.u8(uint8_t(r.kind));
    w.u8(r.entryOffset);
    w.u8(r.paddingBefore);
    uint8_t expected = uint8_t(std::min(r.expected.size(), kMaxExpectedBytes));
    w.u8(expected);
    w.raw(std::span<const uint8_t>(r.expected).first(expected));
    w.zeros(start + 48 - w.size());
    w.u32(uint32_t(r.jumpOffset));
    w.u32(uint32_t(r.overwrittenOffset));
    w.u32(r.overwrittenSize);
    w.u8(r.quiescent ? 1 : 0);
    w.zeros(start + kRedirectSize - w.size());
  }
  for (const PatchFixup &f : image.fixups) {
    w.u32(f.site);
    w.u8(uint8_t(f.kind));
    w.u8(f.fieldOffset);
    w.u8(f.instructionSize);
    w.u8(uint8_t(uint8_t(f.space) | (f.scale << 4)));
    w.u64(f.target);
    w.u32(f.veneer);
    w.u32(0);
  }
  for (const PatchFunction &f : image.functions) {
    w.u32(f.rva);
    w.u32(f.size);
    w.u64(f.patchedRva);
    w.u32(strings.add(f.name));
    w.u32(f.added ? 1 : 0);
  }
  auto orNone = [&](const std::string &s) { return s.empty() ? kNoName : strings.add(s); };
  for (const PatchImport &i : image.imports) {
    w.u32(strings.add(i.symbol));
    w.u32(orNone(i.version));
    w.u32(orNone(i.library));
  }
  w.patch32(stringSizeAt, uint32_t(strings.table.size()));
  w.raw(strings.table.bytes);
  return std::move(w.bytes);
}

Status decodeRecords(std::span<const uint8_t> r, PatchImage &image) {
  if (r.size() < kHeaderSize + kBaselineSize || std::memcmp(r.data(), kMagic, 8) != 0)
    return fail("no Hotforge patch records (bad magic or too small)");
  uint32_t version = readLe32(&r[8]);
  if (version != kPatchFormatVersion)
    return fail("patch format version ", version, " is not supported (this hotforge reads ", kPatchFormatVersion, ")");
  uint16_t format = readLe16(&r[12]), machine = readLe16(&r[14]);
  std::optional<Format> knownFormat = findFormat([&](const ContainerTarget &c) { return c.recordCode() == format; });
  std::optional<Machine> knownMachine = findMachine([&](const MachineTarget &t) { return t.recordCode() == machine; });
  if (!knownFormat || !knownMachine) return fail("offset 0xc: unknown format ", format, " or machine ", machine);
  image.format = *knownFormat;
  image.machine = *knownMachine;
  image.sequence = readLe32(&r[16]);
  image.imageSize = readLe32(&r[20]);
  uint64_t redirects = readLe32(&r[24]), fixups = readLe32(&r[28]), functions = readLe32(&r[32]),
           stringSize = readLe32(&r[36]), imports = readLe32(&r[40]);
  uint64_t stringsAt = kHeaderSize + kBaselineSize + redirects * kRedirectSize + fixups * kFixupSize +
                       functions * kFunctionSize + imports * kImportSize;
  if (stringsAt + stringSize > r.size())
    return fail("records claim ", redirects, " redirects, ", fixups, " fixups, ", functions, " functions, ", imports,
                " imports and ", stringSize, " string bytes: more than the ", r.size(), " bytes present");
  std::span<const uint8_t> strings = r.subspan(stringsAt, stringSize);
  auto name = [&](uint32_t at) -> Outcome<std::optional<std::string>> {
    if (at == kNoName) return std::optional<std::string>();
    if (at >= strings.size()) return fail("string offset ", hexAddress(at), " is outside the string table");
    size_t end = at;
    while (end < strings.size() && strings[end]) ++end;
    if (end == strings.size()) return fail("string at ", hexAddress(at), " is not terminated");
    return std::optional<std::string>(std::string(reinterpret_cast<const char *>(&strings[at]), end - at));
  };

  const uint8_t *b = &r[kHeaderSize];
  std::copy(b, b + 32, image.baseline.sha256.begin());
  uint8_t idSize = std::min<uint8_t>(b[32], kMaxBuildId);
  image.baseline.buildId.assign(b + 33, b + 33 + idSize);
  image.baseline.timeDateStamp = readLe32(b + 68);
  image.baseline.checkSum = readLe32(b + 72);
  image.baseline.sizeOfImage = readLe32(b + 76);
  Outcome<std::optional<std::string>> file = name(readLe32(b + 80));
  if (!file) return std::move(file).failure();
  image.baseline.fileName = file->value_or("");

  const uint8_t *p = &r[kHeaderSize + kBaselineSize];
  for (uint64_t i = 0; i < redirects; ++i, p += kRedirectSize) {
    PatchRedirect d;
    d.baseRva = readLe32(p);
    d.baseSize = readLe32(p + 4);
    d.patchRva = readLe32(p + 8);
    d.stubRva = readLe32(p + 12);
    Outcome<std::optional<std::string>> n = name(readLe32(p + 16));
    if (!n) return std::move(n).failure();
    d.name = *n;
    if (p[20] < 1 || p[20] > 5) return fail("redirect ", i, " has unknown kind ", p[20]);
    d.kind = RedirectKind(p[20]);
    d.entryOffset = p[21];
    d.paddingBefore = p[22];
    d.expected.assign(p + 24, p + 24 + std::min<size_t>(p[23], kMaxExpectedBytes));
    d.jumpOffset = int32_t(readLe32(p + 48));
    d.overwrittenOffset = int32_t(readLe32(p + 52));
    d.overwrittenSize = readLe32(p + 56);
    d.quiescent = p[60] & 1;
    image.redirects.push_back(std::move(d));
  }
  for (uint64_t i = 0; i < fixups; ++i, p += kFixupSize) {
    PatchFixup f;
    f.site = readLe32(p);
    if (p[4] < 1 || p[4] > 13) return fail("fixup ", i, " has unknown kind ", p[4]);
    f.kind = FixupKind(p[4]);
    f.fieldOffset = p[5];
    f.instructionSize = p[6];
    if ((p[7] & 0xf) > uint8_t(FixupSpace::Import)) return fail("fixup ", i, " has unknown target space ", p[7] & 0xf);
    f.space = FixupSpace(p[7] & 0xf);
    f.scale = p[7] >> 4;
    f.target = readLe64(p + 8);
    if (f.space == FixupSpace::Import && f.target >= imports)
      return fail("fixup ", i, " names import ", f.target, " of ", imports);
    f.veneer = readLe32(p + 16);
    image.fixups.push_back(f);
  }
  for (uint64_t i = 0; i < functions; ++i, p += kFunctionSize) {
    PatchFunction f;
    f.rva = readLe32(p);
    f.size = readLe32(p + 4);
    f.patchedRva = readLe64(p + 8);
    Outcome<std::optional<std::string>> n = name(readLe32(p + 16));
    if (!n) return std::move(n).failure();
    f.name = *n;
    f.added = readLe32(p + 20) & 1;
    image.functions.push_back(std::move(f));
  }
  for (uint64_t i = 0; i < imports; ++i, p += kImportSize) {
    Outcome<std::optional<std::string>> symbol = name(readLe32(p)), version = name(readLe32(p + 4)),
                                        library = name(readLe32(p + 8));
    for (auto *n : {&symbol, &version, &library})
      if (!*n) return std::move(*n).failure();
    if (!*symbol || (*symbol)->empty()) return fail("import ", i, " has no symbol name");
    image.imports.push_back({**symbol, version->value_or(""), library->value_or("")});
  }
  return success();
}

}  // namespace hotforge
