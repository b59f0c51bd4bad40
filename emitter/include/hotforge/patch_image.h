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

// Refuses (with every reason) a diff that has needs-restart changes, and functions that cannot
// be redirected safely; never returns a partial image.
llvm::Expected<PatchImage> buildPatchImage(const Image &base, const Image &patched, const Diff &diff,
                                           const BuildOptions &options = {});

constexpr const char *kPatchImageSchema = "hotforge.patch-image/1";
nlohmann::json toJson(const PatchImage &image);

}  // namespace hotforge
