// The emitter's one switch over Format: a new container adds its writer here.
#include "emitter_internal.h"

namespace hotforge::emitter {

std::unique_ptr<ContainerWriter> containerWriter(Format format) {
  switch (format) {
  case Format::Elf: return elfWriter();
  case Format::Pe: return peWriter();
  }
  return elfWriter();  // not reached: the switch names every format
}

}  // namespace hotforge::emitter
