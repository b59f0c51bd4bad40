// Reading a large real binary: the cost every hotforge command pays first.
// Usage: inspect_bench [--benchmark_*] (binaries from HOTFORGE_BENCH_BINARIES, colon-separated)
#include "hotforge/image.h"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <sstream>

namespace {

void readImageBenchmark(benchmark::State &state, std::string path) {
  size_t functions = 0, bytes = 0;
  for (auto _ : state) {
    llvm::Expected<hotforge::Image> image = hotforge::readImage(path);
    if (!image) {
      state.SkipWithError(llvm::toString(image.takeError()).c_str());
      return;
    }
    functions = image->functions.size();
    bytes = image->fileBytes().size();
    benchmark::DoNotOptimize(image->functions.data());
  }
  state.counters["functions"] = double(functions);
  state.SetBytesProcessed(int64_t(bytes) * state.iterations());
}

}  // namespace

int main(int argc, char **argv) {
  const char *list = std::getenv("HOTFORGE_BENCH_BINARIES");
  std::istringstream paths(list ? list : "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1");
  for (std::string path; std::getline(paths, path, ':');)
    benchmark::RegisterBenchmark(("readImage/" + path.substr(path.rfind('/') + 1)).c_str(), readImageBenchmark, path)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(2.0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
