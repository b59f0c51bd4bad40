// The PE container (PE32+ DLL with load config and IMAGE_HOT_PATCH_INFO): see docs/format.md.
#include "emitter_internal.h"

namespace hotforge::emitter {

llvm::Error writePeContainer(PatchImage &image) {
  return makeError("PE patch images are not written yet");
}

}  // namespace hotforge::emitter
