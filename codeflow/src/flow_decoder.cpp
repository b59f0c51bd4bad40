// The one switch over Machine in codeflow: a new machine adds its flow decoder here.
#include "flow_decoder.h"

namespace hotforge::codeflow {

llvm::Expected<std::unique_ptr<FlowDecoder>> createFlowDecoder(Machine machine) {
  switch (machine) {
  case Machine::X64: return createX64Flow();
  case Machine::Arm64: return createArm64Flow();
  }
  return createX64Flow();  // not reached: the switch names every machine
}

}  // namespace hotforge::codeflow
