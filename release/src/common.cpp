// Hashing, JSON files, entry names, release ids and shard specs.
#include "release_internal.h"

#include "hotforge/core/error.h"

#include <llvm/Support/FileSystem.h>
#include <llvm/Support/MemoryBuffer.h>
#include <openssl/evp.h>

#include <charconv>

namespace hotforge {
namespace release_detail {

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX *>(context_), EVP_sha256(), nullptr);
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX *>(context_)); }
void Sha256::update(llvm::ArrayRef<uint8_t> bytes) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX *>(context_), bytes.data(), bytes.size());
}
void Sha256::update(llvm::StringRef text) { EVP_DigestUpdate(static_cast<EVP_MD_CTX *>(context_), text.data(), text.size()); }
void Sha256::field(llvm::StringRef text) {
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t(text.size()) >> (8 * i));
  update(llvm::ArrayRef<uint8_t>(length, 8));
  update(text);
}
Digest Sha256::finish() {
  Digest out{};
  unsigned length = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX *>(context_), out.data(), &length);
  return out;
}

llvm::Expected<Digest> sha256File(const std::string &path) {
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> file = readFileBuffer(path);
  if (!file) return file.takeError();
  const llvm::MemoryBuffer &buffer = **file;
  return sha256(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(buffer.getBufferStart()), buffer.getBufferSize()));
}

llvm::Expected<nlohmann::json> readJsonFile(const std::string &path) {
  llvm::Expected<std::vector<uint8_t>> bytes = lift(readFileBytes(path));
  if (!bytes) return bytes.takeError();
  nlohmann::json doc = nlohmann::json::parse(bytes->begin(), bytes->end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return formatError("{}: not valid JSON", path);
  return doc;
}

llvm::Error writeTextAtomically(const std::string &path, const std::string &text) {
  return writeFileAtomically(path, llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size()),
                             0666, /*replace=*/true);
}

std::string restartLabel(const nlohmann::json &reason) {
  if (!reason.at("rule").is_string()) return "build refused";
  return reason.at("rule").get<std::string>() + " " +
         (reason.at("name").is_string() ? reason.at("name").get<std::string>() : "");
}

}  // namespace release_detail

std::string_view releaseGroupingName(ReleaseGrouping grouping) {
  switch (grouping) {
  case ReleaseGrouping::Machine: return "machine";
  case ReleaseGrouping::FormatMachine: return "format-machine";
  case ReleaseGrouping::Single: return "single";
  }
  return "machine";
}

namespace {

bool plainByte(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '+' ||
         c == '-' || c == '_';
}

void appendEscaped(std::string &out, unsigned char c) {
  static const char *digits = "0123456789ABCDEF";
  out += '%';
  out += digits[c >> 4];
  out += digits[c & 15];
}

}  // namespace

std::string releaseEntryName(llvm::StringRef pairName) {
  std::string out;
  bool first = true;
  for (llvm::StringRef rest = pairName; !rest.empty();) {
    auto [component, tail] = rest.split('/');
    rest = tail;
    if (component.empty() || component == ".") continue;
    if (!first) out += "__";
    first = false;
    for (size_t i = 0; i < component.size(); ++i) {
      char c = component[i];
      bool escape = !plainByte(c);
      // An '_' stays only where it cannot be read as part of a "__" separator.
      if (c == '_')
        escape = i == 0 || i + 1 == component.size() || component[i - 1] == '_' || component[i + 1] == '_';
      if (escape) appendEscaped(out, static_cast<unsigned char>(c));
      else out += c;
    }
  }
  return out + ".hfpatch";
}

llvm::Error checkReleaseId(llvm::StringRef id) {
  if (id.empty()) return makeError("the release id is empty; it names the units");
  if (id.size() > 100) return formatError("release id \"{}\" is longer than 100 bytes", id.str());
  if (id[0] == '.' || id[0] == '-')
    return formatError("release id \"{}\" starts with '{}'; it names the unit files", id.str(), id[0]);
  for (char c : id)
    if (!plainByte(c))
      return formatError("release id \"{}\" may only hold letters, digits and . _ + - (it names the unit files)", id.str());
  return llvm::Error::success();
}

std::string releaseToolIdentity(llvm::StringRef version) {
  std::string identity = "hotforge " + version.str();
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, nullptr);
  if (exe.empty()) return identity;
  llvm::Expected<release_detail::Digest> d = release_detail::sha256File(exe);
  if (!d) {
    llvm::consumeError(d.takeError());
    return identity;
  }
  return identity + " " + hexEncode(*d);
}

llvm::Expected<ShardSpec> parseShardSpec(llvm::StringRef text) {
  auto [left, right] = text.split('/');
  ShardSpec spec;
  auto number = [](llvm::StringRef s, unsigned &out) {
    if (s.empty() || s.size() > 6) return false;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size();
  };
  if (!number(left, spec.index) || !number(right, spec.count) || spec.count == 0 || spec.index == 0 ||
      spec.index > spec.count)
    return formatError("shard \"{}\" is not I/N with 1 <= I <= N (e.g. 2/4)", text.str());
  return spec;
}

unsigned shardOfPair(llvm::StringRef name, unsigned count) {
  if (count <= 1) return 1;
  release_detail::Digest d = sha256(llvm::ArrayRef<uint8_t>(
      reinterpret_cast<const uint8_t *>(name.data()), name.size()));
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | d[i];
  return static_cast<unsigned>(value % count) + 1;
}

}  // namespace hotforge
