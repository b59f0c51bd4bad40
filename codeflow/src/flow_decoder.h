// The per-machine FlowDecoder factories (flow_x64.cpp, flow_arm64.cpp).
#pragma once

#include "hotforge/codeflow/discovery.h"
#include "hotforge/codeflow/mc_toolkit.h"

namespace hotforge::codeflow {

llvm::Expected<std::unique_ptr<FlowDecoder>> createX64Flow();
llvm::Expected<std::unique_ptr<FlowDecoder>> createArm64Flow();

}  // namespace hotforge::codeflow
