#include "hotforge/applier.h"

#include "hotforge/core/bytes.h"
#include "hotforge/core/machine_target.h"

#include <algorithm>
#include <thread>

namespace hotforge {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::microseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
}

std::vector<uint8_t> readBytes(ApplierBackend &backend, uint64_t address, size_t size) {
  std::vector<uint8_t> bytes(size);
  if (!backend.read(address, bytes)) bytes.clear();
  return bytes;
}

// The jumps of an image at `imageAddress`. The base's bytes under each come from what the image
// expects (the entry may hold an earlier patch now).
Outcome<std::vector<EntryChange>> entryChanges(const PatchImage &image, uint64_t baseAddress, uint64_t imageAddress) {
  std::vector<EntryChange> changes;
  for (const PatchRedirect &r : image.redirects) {
    Outcome<EntryWrite> w = entryWrite(r, image.machine, baseAddress, imageAddress);
    if (!w) return std::move(w).failure();
    EntryChange change;
    change.name = r.name.value_or("");
    change.address = w->address;
    uint64_t offset = w->address - w->expectedAddress;
    if (w->address < w->expectedAddress || offset + w->bytes.size() > r.expected.size())
      return fail(change.name, ": the image's expected bytes do not cover its jump");
    change.original.assign(r.expected.begin() + offset, r.expected.begin() + offset + w->bytes.size());
    change.written = std::move(w->bytes);
    change.redirect = r;
    change.baseAddress = baseAddress;
    changes.push_back(std::move(change));
  }
  return changes;
}

// Why the stopped threads are in the way of `changes` (empty: none is).
std::string threadsInTheWay(ApplierBackend &backend, std::span<const EntryChange> changes, bool strict) {
  bool stacksMatter = strict || std::any_of(changes.begin(), changes.end(), [](const EntryChange &c) {
                        return c.redirect && c.redirect->quiescent;
                      });
  std::string busy;
  for (const StoppedThread &thread : backend.stoppedThreads()) {
    std::span<const uint64_t> stack = stacksMatter ? backend.stackWords(thread) : std::span<const uint64_t>{};
    for (const EntryChange &c : changes) {
      std::string why = c.redirect ? threadInTheWay(*c.redirect, c.baseAddress, thread.pc, stack, strict)
                        : AddressSpan{c.address, c.address + c.written.size()}.strictlyContains(thread.pc)
                            ? fail("is at ", hexAddress(thread.pc), " inside ", c.name).message
                            : std::string();
      if (!why.empty()) busy += fail(busy.empty() ? "" : "; ", "thread ", thread.tid, " ", why).message;
    }
  }
  return busy;
}

// Whether `bytes` are at `address`, read into `scratch` (whose capacity is reserved beforehand:
// the agent allocates nothing while threads are stopped, one may hold malloc's lock).
bool holds(ApplierBackend &backend, uint64_t address, std::span<const uint8_t> bytes, std::vector<uint8_t> &scratch) {
  scratch.resize(bytes.size());
  if (backend.read(address, scratch)) return std::equal(bytes.begin(), bytes.end(), scratch.begin());
  scratch.clear();
  return false;
}

Failure notExpected(const PatchRedirect &r, uint64_t from, std::span<const uint8_t> found) {
  return fail(r.name.value_or("a function"), " at ", hexAddress(from), " does not hold the bytes this patch expects (",
              hexEncode(found), " instead of ", hexEncode(r.expected), "): another patch or another build");
}

// With every thread stopped: the entries still to write into `pending`, or why none may be
// written. Going in, an entry the image describes must hold the image's expected bytes (padding
// included); otherwise an entry holds where it comes from, or is left when it is there already.
Status pendingChanges(ApplierBackend &backend, std::span<const EntryChange> changes, EntryDirection direction,
                      std::vector<const EntryChange *> &pending, std::vector<uint8_t> &scratch) {
  pending.clear();
  bool in = direction == EntryDirection::In;
  for (const EntryChange &c : changes) {
    if (in && c.redirect) {
      uint64_t from = c.baseAddress + c.redirect->baseRva - c.redirect->paddingBefore;
      if (!holds(backend, from, c.redirect->expected, scratch)) return notExpected(*c.redirect, from, scratch);
      pending.push_back(&c);
      continue;
    }
    if (holds(backend, c.address, in ? c.written : c.original, scratch)) continue;
    if (holds(backend, c.address, in ? c.original : c.written, scratch)) {
      pending.push_back(&c);
      continue;
    }
    return fail("the jump at ", hexAddress(c.address), " (", c.name, ") was changed by someone else (it holds ",
                hexEncode(scratch), "); nothing written");
  }
  return success();
}

}  // namespace

uint64_t mappedImageSize(const PatchImage &image) { return alignTo(image.imageSize, 0x10000); }

Status checkExpectedBytes(ApplierBackend &backend, const PatchImage &image, uint64_t baseAddress) {
  for (const PatchRedirect &r : image.redirects) {
    uint64_t from = baseAddress + r.baseRva - r.paddingBefore;
    std::vector<uint8_t> found = readBytes(backend, from, r.expected.size());
    if (found != r.expected) return notExpected(r, from, found);
  }
  return success();
}

Outcome<PreparedImage> stageImage(ApplierBackend &backend, const PatchImage &image, uint64_t baseAddress,
                                    bool checkEntries) {
  if (checkEntries)
    if (Status s = checkExpectedBytes(backend, image, baseAddress); !s) return std::move(s).failure();
  Outcome<std::vector<uint64_t>> imports =
      resolveImports(image, [&](const PatchImport &import) { return backend.resolveImport(import); });
  if (!imports) return std::move(imports).failure();
  PreparedImage prepared;
  prepared.size = mappedImageSize(image);
  Outcome<uint64_t> address = backend.reserveNear(baseAddress, prepared.size, machineTarget(image.machine).patchReach());
  if (!address) return std::move(address).failure();
  prepared.address = *address;
  // Until the image is installed a failure releases it again: the target is left as it was.
  auto released = [&](Failure failure, bool installed) -> Failure {
    backend.release(image, prepared.address, installed);
    return failure;
  };
  std::vector<uint8_t> laidOut = layOut(image);
  if (Status fixed = applyFixups(image, baseAddress, prepared.address, *imports, laidOut); !fixed)
    return released(std::move(fixed).failure(), false);
  Outcome<std::vector<EntryChange>> changes = entryChanges(image, baseAddress, prepared.address);
  if (!changes) return released(std::move(changes).failure(), false);
  prepared.changes = std::move(*changes);
  if (Status installed = backend.install(image, prepared.address, laidOut); !installed)
    return released(std::move(installed).failure(), false);
  return prepared;
}

Status stopAllThreads(ApplierBackend &backend) {
  std::vector<int> asked;
  asked.reserve(1024);  // the agent allocates nothing once a thread is stopped (it may hold malloc's lock)
  for (int round = 0; round < 64; ++round) {
    bool added = false;
    for (int tid : backend.threads()) {
      if (std::find(asked.begin(), asked.end(), tid) != asked.end()) continue;
      Outcome<bool> stopping = backend.requestStop(tid);
      if (!stopping) return std::move(stopping).failure();
      if (*stopping) asked.push_back(tid), added = true;
    }
    if (Status s = backend.awaitStops(); !s) return std::move(s).failure();
    if (!added) break;
  }
  return success();
}

Status writeEntries(ApplierBackend &backend, std::span<const EntryChange> changes, EntryDirection direction,
                    const StopPolicy &policy, StopReport &report) {
  auto deadline = Clock::now() + policy.patience;
  bool strict = policy.strict && direction == EntryDirection::In;
  std::vector<const EntryChange *> pending;
  pending.reserve(changes.size());
  std::vector<uint8_t> scratch;
  for (const EntryChange &c : changes)
    scratch.reserve(std::max({scratch.capacity(), c.written.size(), c.original.size(),
                              c.redirect ? c.redirect->expected.size() : size_t(0)}));
  while (true) {
    ++report.attempts;
    auto stoppedAt = Clock::now();
    if (Status s = stopAllThreads(backend); !s) {
      backend.letGo();
      return std::move(s).failure();
    }
    report.stopping = since(stoppedAt);
    if (Status s = pendingChanges(backend, changes, direction, pending, scratch); !s) {
      backend.letGo();
      return s;
    }
    std::string busy = threadsInTheWay(backend, changes, strict);
    if (busy.empty()) {
      bool in = direction == EntryDirection::In;
      for (size_t i = 0; i < pending.size(); ++i) {
        const EntryChange &c = *pending[i];
        if (Status written = backend.writeCode(c.address, in ? c.written : c.original); !written) {
          for (size_t back = 0; back < i; ++back) {
            const EntryChange &b = *pending[back];
            static_cast<void>(backend.writeCode(b.address, in ? b.original : b.written));
          }
          backend.letGo();
          return std::move(written).failure();
        }
      }
      backend.letGo();
      report.pause = since(stoppedAt);
      return success();
    }
    backend.resumeAll();
    if (backend.interrupted())
      return fail("interrupted after ", report.attempts, " attempts while threads were in the way; nothing applied");
    if (Clock::now() >= deadline) return fail("gave up after ", report.attempts, " attempts: ", busy);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::optional<bool> entriesWritten(ApplierBackend &backend, std::span<const EntryChange> changes) {
  size_t written = 0, original = 0;
  for (const EntryChange &c : changes) {
    std::vector<uint8_t> now = readBytes(backend, c.address, c.written.size());
    written += now == c.written;
    original += now == c.original;
  }
  if (written == changes.size()) return true;
  if (original == changes.size()) return false;
  return std::nullopt;
}

SequenceStep sequenceStep(std::optional<uint32_t> applied, std::optional<uint32_t> highestBefore, uint32_t offered) {
  if (highestBefore && offered < *highestBefore) return SequenceStep::LowerThanBefore;
  if (!applied) return SequenceStep::Apply;
  return offered > *applied ? SequenceStep::Replace : SequenceStep::NotNewer;
}

}  // namespace hotforge
