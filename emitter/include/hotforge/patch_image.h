// The emitter: turns a Diff into a hotpatch image, a native container (ELF shared object or PE32+
// DLL of the base's machine) holding only the changed and new code and data, the fixups that bind
// it to the running baseline, the redirection of every changed function, unwind data, and the
// identity of the exact baseline it fits. docs/format.md documents every record.
#pragma once

#include "hotforge/diff.h"
#include "hotforge/image.h"
#include "hotforge/core/patch_format.h"

#include <llvm/ADT/ArrayRef.h>
#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace hotforge {

struct BuildOptions {
  uint32_t sequence = 1;
};

// One reason not to build: its rule id (docs/diff-json.md: the diff's own for a change that needs
// a restart, HF4xx for what the emitter cannot carry), the function or data it concerns when the
// rule names one, and the reason.
struct Refusal {
  std::string rule;
  std::optional<std::string> name;
  std::string reason;
};

// Why buildPatchImage refused: the diff has changes that need a restart (`needsRestart`, each
// with its rule), or the emitter cannot carry something safely.
struct BuildRefusal {
  bool needsRestart = false;
  std::vector<Refusal> refusals;
  // The report: a headline, then one line per refusal with its rule id.
  std::string message() const;
};

// The error buildPatchImage fails with when it refuses; any other error is a failure (an
// internal check). takeRefusal tells them apart.
class RefusalError : public llvm::ErrorInfo<RefusalError> {
public:
  static char ID;
  explicit RefusalError(BuildRefusal refusal) : refusal_(std::move(refusal)) {}
  const BuildRefusal &refusal() const { return refusal_; }
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }

private:
  BuildRefusal refusal_;
};

// The refusal in `error`, which it then consumes; std::nullopt, with `error` left as it was, for
// any other error.
std::optional<BuildRefusal> takeRefusal(llvm::Error &error);

// The refusals as JSON: [{"rule", "name" (or null), "reason"}].
nlohmann::json toJson(const std::vector<Refusal> &refusals);

// Refuses (with every reason, each with its rule id) a diff that has needs-restart changes, and
// functions that cannot be redirected safely; never returns a partial image.
llvm::Expected<PatchImage> buildPatchImage(const Image &base, const Image &patched, const Diff &diff,
                                           const BuildOptions &options = {});

constexpr const char *kPatchImageSchema = "hotforge.patch-image/1";
nlohmann::json toJson(const PatchImage &image);

}  // namespace hotforge
