// The ptrace loader's records: what is applied to which process, in a directory only the caller
// can write, each record written durably before the process changes (docs/loader.md, "Records").
#include "hotforge/loader.h"

#include "hotforge/core/bytes.h"
#include "hotforge/core/files.h"
#include "hotforge/core/json_text.h"

#include <charconv>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hotforge {
namespace {

constexpr const char *kStateSchema = "hotforge.state/1";

// Permission bits as ls and chmod write them: "0755".
std::string octalMode(unsigned mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", mode & 07777);
  return text;
}

std::string stateDirectoryPath() {
  const char *dir = getenv("HOTFORGE_STATE_DIR");
  return dir && *dir ? dir : "/tmp/hotforge-state";
}

// Reads fields of a record, refusing what is missing or of another type with one line.
class Fields {
public:
  Fields(const nlohmann::json &object, std::string where) : object_(object), where_(std::move(where)) {}

  Outcome<uint64_t> number(const char *key, uint64_t limit = UINT64_MAX) const {
    auto it = object_.find(key);
    if (it == object_.end() || !it->is_number_unsigned() || it->get<uint64_t>() > limit)
      return fail(where_, ": \"", key, "\" must be a number from 0 to ", limit);
    return it->get<uint64_t>();
  }
  Outcome<std::string> text(const char *key) const {
    auto it = object_.find(key);
    if (it == object_.end() || !it->is_string()) return fail(where_, ": \"", key, "\" must be a string");
    return it->get<std::string>();
  }
  Outcome<std::vector<uint8_t>> hex(const char *key, size_t maxBytes) const {
    Outcome<std::string> t = text(key);
    if (!t) return std::move(t).failure();
    std::optional<std::vector<uint8_t>> bytes = hexDecode(*t);
    if (!bytes || bytes->empty() || bytes->size() > maxBytes)
      return fail(where_, ": \"", key, "\" must be 1 to ", maxBytes, " bytes in lowercase hex");
    return std::move(*bytes);
  }
  Outcome<const nlohmann::json *> array(const char *key) const {
    auto it = object_.find(key);
    if (it == object_.end() || !it->is_array()) return fail(where_, ": \"", key, "\" must be an array");
    return &*it;
  }

private:
  const nlohmann::json &object_;
  std::string where_;
};

constexpr size_t kMaxRedirectBytes = 64;

Outcome<AppliedRedirect> parseRedirect(const nlohmann::json &json, const std::string &where) {
  if (!json.is_object()) return fail(where, ": not an object");
  Fields f(json, where);
  Outcome<std::string> name = f.text("name");
  Outcome<uint64_t> address = f.number("address");
  Outcome<std::vector<uint8_t>> original = f.hex("original", kMaxRedirectBytes);
  Outcome<std::vector<uint8_t>> written = f.hex("written", kMaxRedirectBytes);
  if (!name) return std::move(name).failure();
  if (!address) return std::move(address).failure();
  if (!original) return std::move(original).failure();
  if (!written) return std::move(written).failure();
  if (original->size() != written->size())
    return fail(where, ": \"original\" and \"written\" differ in length");
  AppliedRedirect r;
  r.name = std::move(*name);
  r.address = *address;
  r.original = std::move(*original);
  r.written = std::move(*written);
  return r;
}

Outcome<AppliedImage> parseApplied(const nlohmann::json &json, const std::string &where) {
  if (!json.is_object()) return fail(where, ": not an object");
  Fields f(json, where);
  AppliedImage a;
  Outcome<std::string> state = f.text("state");
  if (!state) return std::move(state).failure();
  if (*state != "applied" && *state != "applying")
    return fail(where, ": \"state\" must be \"applied\" or \"applying\"");
  a.complete = *state == "applied";
  for (auto [key, field] : {std::pair{"unit", &a.unit}, {"entry", &a.entry}, {"baseline", &a.baselinePath},
                            {"baseline_sha256", &a.baselineSha256}}) {
    Outcome<std::string> t = f.text(key);
    if (!t) return std::move(t).failure();
    *field = std::move(*t);
  }
  for (auto [key, field, limit] : {std::tuple{"base_address", &a.baseAddress, UINT64_MAX},
                                   {"image_address", &a.imageAddress, UINT64_MAX},
                                   {"image_size", &a.imageSize, uint64_t(UINT32_MAX)}}) {
    Outcome<uint64_t> n = f.number(key, limit);
    if (!n) return std::move(n).failure();
    *field = *n;
  }
  Outcome<uint64_t> sequence = f.number("sequence", UINT32_MAX);
  if (!sequence) return std::move(sequence).failure();
  a.sequence = uint32_t(*sequence);
  Outcome<const nlohmann::json *> redirects = f.array("redirects");
  if (!redirects) return std::move(redirects).failure();
  for (size_t i = 0; i < (*redirects)->size(); ++i) {
    Outcome<AppliedRedirect> r = parseRedirect((**redirects)[i], concatenate(where, " redirect ", i));
    if (!r) return std::move(r).failure();
    a.redirects.push_back(std::move(*r));
  }
  if (a.redirects.empty()) return fail(where, ": no redirect");
  // How the apply went: optional.
  Outcome<uint64_t> pause = json.contains("pause_us") ? f.number("pause_us") : uint64_t(0);
  Outcome<uint64_t> attempts = json.contains("attempts") ? f.number("attempts", UINT32_MAX) : uint64_t(0);
  Outcome<uint64_t> stopping = json.contains("stop_us") ? f.number("stop_us") : uint64_t(0);
  if (!stopping) return std::move(stopping).failure();
  a.stopping = std::chrono::microseconds(*stopping);
  if (!pause) return std::move(pause).failure();
  if (!attempts) return std::move(attempts).failure();
  a.pause = std::chrono::microseconds(*pause);
  a.attempts = unsigned(*attempts);
  return a;
}

}  // namespace

Outcome<uint64_t> processStartTime(int pid) {
  std::string path = concatenate("/proc/", pid, "/stat");
  char buffer[1024];
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : ::read(fd, buffer, sizeof buffer - 1);
  if (fd >= 0) close(fd);
  if (n <= 0) return fail("process ", pid, " is not running");
  std::string stat(buffer, size_t(n));
  // The command name (field 2) is in parentheses and may hold anything: count from the last ')'.
  size_t at = stat.rfind(')');
  if (at != std::string::npos && at + 2 < stat.size() && (stat[at + 2] == 'Z' || stat[at + 2] == 'X'))
    return fail("process ", pid, " is not running (it has exited)");
  for (int field = 2; field < 22 && at != std::string::npos; ++field) at = stat.find(' ', at + 1);
  unsigned long long start = 0;
  if (at == std::string::npos || sscanf(stat.c_str() + at, " %llu", &start) != 1)
    return fail(path, ": cannot read the start time");
  return uint64_t(start);
}

nlohmann::json toJson(const AppliedImage &a) {
  nlohmann::json redirects = nlohmann::json::array();
  for (const AppliedRedirect &r : a.redirects)
    redirects.push_back({{"name", r.name}, {"address", r.address}, {"original", hexEncode(r.original)},
                         {"written", hexEncode(r.written)}});
  return {{"state", a.complete ? "applied" : "applying"},
          {"unit", a.unit},
          {"entry", a.entry},
          {"baseline", a.baselinePath},
          {"baseline_sha256", a.baselineSha256},
          {"sequence", a.sequence},
          {"base_address", a.baseAddress},
          {"image_address", a.imageAddress},
          {"image_size", a.imageSize},
          {"pause_us", a.pause.count()},
          {"stop_us", a.stopping.count()},
          {"attempts", a.attempts},
          {"redirects", std::move(redirects)}};
}

Outcome<ProcessRecord> parseRecord(const nlohmann::json &json, const std::string &name) {
  if (!json.is_object()) return fail(name, ": not a state record (a JSON object)");
  Fields f(json, name);
  Outcome<std::string> schema = f.text("schema");
  if (!schema) return std::move(schema).failure();
  if (*schema != kStateSchema) return fail(name, ": schema \"", *schema, "\" is not ", kStateSchema);
  ProcessRecord record;
  Outcome<uint64_t> pid = f.number("pid", INT32_MAX);
  Outcome<uint64_t> start = f.number("start_time");
  Outcome<const nlohmann::json *> applied = f.array("applied");
  if (!pid) return std::move(pid).failure();
  if (!start) return std::move(start).failure();
  if (!applied) return std::move(applied).failure();
  record.pid = int(*pid);
  record.startTime = *start;
  for (size_t i = 0; i < (*applied)->size(); ++i) {
    Outcome<AppliedImage> a = parseApplied((**applied)[i], concatenate(name, ": applied ", i));
    if (!a) return std::move(a).failure();
    record.applied.push_back(std::move(*a));
  }
  return record;
}

Outcome<StateDirectory> StateDirectory::open(bool create) {
  std::string path = stateDirectoryPath();
  if (create && mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    return fail("state directory ", path, ": cannot create it: ", strerror(errno));
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    struct stat st;
    if (lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
      return fail("state directory ", path, " is a symbolic link; refused (set HOTFORGE_STATE_DIR to a directory of "
                  "your own)");
    if (error == ENOENT && !create) return StateDirectory(-1, path);  // nothing was ever recorded
    return fail("state directory ", path, ": ", strerror(error));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return fail("state directory ", path, ": ", strerror(errno));
  }
  std::string problem =
      st.st_uid != geteuid() ? concatenate("is owned by uid ", st.st_uid, ", not by you (uid ", geteuid(), ")")
      : (st.st_mode & 022)   ? concatenate("is writable by group or others (mode ", octalMode(st.st_mode), ")")
                             : "";
  // One command at a time per directory: two applies to one process must not interleave.
  if (problem.empty() && flock(fd, LOCK_EX) != 0)
    problem = concatenate("cannot be locked (", strerror(errno), ")");
  if (!problem.empty()) {
    close(fd);
    return fail("state directory ", path, " ", problem, "; refused: another user could change what revert writes into "
                "a process (use a directory of your own, mode 0700, with HOTFORGE_STATE_DIR)");
  }
  return StateDirectory(fd, path);
}

StateDirectory::~StateDirectory() {
  if (fd_ >= 0) close(fd_);
}

std::string StateDirectory::recordPath(int pid) const { return concatenate(path_, "/", pid, ".json"); }

Outcome<std::optional<ProcessRecord>> StateDirectory::read(int pid) const {
  if (fd_ < 0) return std::optional<ProcessRecord>();
  std::string name = concatenate(pid, ".json"), path = recordPath(pid);
  if (faccessat(fd_, name.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) return std::optional<ProcessRecord>();
  Outcome<RegularFile> file = RegularFile::openAt(fd_, name, path, kMaxStateFileSize, /*noFollow=*/true);
  if (!file) return std::move(file).failure();
  if (file->owner() != geteuid()) return fail(path, ": owned by uid ", file->owner(), ", not by you; refused");
  Outcome<std::vector<uint8_t>> bytes = file->read(file->size());
  if (!bytes) return std::move(bytes).failure();
  nlohmann::json json = nlohmann::json::parse(bytes->begin(), bytes->end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return fail(path, ": not valid JSON; refused");
  Outcome<ProcessRecord> record = parseRecord(json, path);
  if (!record) return std::move(record).failure();
  if (record->pid != pid) return fail(path, ": the record is for process ", record->pid, "; refused");
  return std::optional<ProcessRecord>(std::move(*record));
}

Status StateDirectory::write(const ProcessRecord &record) const {
  if (fd_ < 0) return fail("state directory ", path_, " does not exist");
  if (record.applied.empty()) return remove(record.pid);
  nlohmann::json applied = nlohmann::json::array();
  for (const AppliedImage &a : record.applied) applied.push_back(toJson(a));
  // jsonText: a unit or baseline path that is not UTF-8 must not make dump() throw mid-apply.
  std::string text = jsonText({{"schema", kStateSchema},
                               {"pid", record.pid},
                               {"start_time", record.startTime},
                               {"applied", std::move(applied)}});
  return writeAtomically(fd_, concatenate(record.pid, ".json"),
                         std::span(reinterpret_cast<const uint8_t *>(text.data()), text.size()),
                         {.mode = 0600, .durable = true, .replace = true}, recordPath(record.pid));
}

Status StateDirectory::remove(int pid) const {
  if (fd_ < 0) return success();
  if (unlinkat(fd_, concatenate(pid, ".json").c_str(), 0) != 0 && errno != ENOENT)
    return fail("cannot remove ", recordPath(pid), ": ", strerror(errno));
  fsync(fd_);
  return success();
}

std::vector<int> StateDirectory::recordedPids() const {
  std::vector<int> pids;
  if (fd_ < 0) return pids;
  int copy = dup(fd_);
  if (copy < 0) return pids;
  DIR *dir = fdopendir(copy);
  if (!dir) {
    close(copy);
    return pids;
  }
  while (dirent *e = readdir(dir)) {
    std::string name = e->d_name;
    // A temporary record a killed command left: the lock says no command writes it now.
    if (name.find(".json.tmp-") != std::string::npos) unlinkat(fd_, name.c_str(), 0);
    int pid = 0;
    if (name.size() > 5 && name.ends_with(".json") && std::from_chars(name.data(), name.data() + name.size() - 5, pid).ptr ==
                                                          name.data() + name.size() - 5 && pid > 0)
      pids.push_back(pid);
  }
  closedir(dir);
  return pids;
}

}  // namespace hotforge
