# Every dependency is a Debian 12 package; see README.md for why each one is here.
find_package(LLVM 19.1 CONFIG REQUIRED)  # "19" alone fails: LLVM's version file wants major.minor
separate_arguments(HOTFORGE_LLVM_DEFINITIONS NATIVE_COMMAND "${LLVM_DEFINITIONS}")
llvm_map_components_to_libnames(HOTFORGE_LLVM_LIBS
  Object MC MCDisassembler X86Disassembler X86Desc X86Info
  AArch64Disassembler AArch64Desc AArch64Info AArch64Utils
  DebugInfoDWARF DebugInfoPDB DebugInfoCodeView DebugInfoMSF Support TargetParser)
add_library(hotforge_llvm INTERFACE)
target_include_directories(hotforge_llvm SYSTEM INTERFACE ${LLVM_INCLUDE_DIRS})
target_compile_definitions(hotforge_llvm INTERFACE ${HOTFORGE_LLVM_DEFINITIONS})
target_link_libraries(hotforge_llvm INTERFACE ${HOTFORGE_LLVM_LIBS})

find_package(zstd 1.5 CONFIG REQUIRED)
find_package(fmt 9 CONFIG REQUIRED)
find_package(CLI11 2.1 CONFIG REQUIRED)
find_package(nlohmann_json 3.11 CONFIG REQUIRED)
find_package(OpenSSL 3 REQUIRED)
find_package(Threads REQUIRED)
if(HOTFORGE_TESTS)
  find_package(GTest 1.12 CONFIG REQUIRED)
  include(GoogleTest)
endif()
if(HOTFORGE_BENCH)
  find_package(benchmark 1.7 CONFIG REQUIRED)
endif()
