// hotforge-pe-apply.exe: applies a PE x64 hotpatch image to a DLL loaded in its own process,
// natively on Windows or under wine64. It loads the base DLL, maps the image within ±2 GiB of it,
// applies the records (fixups, redirects) and calls the DLL's exported functions before, while
// and after the patch is in place (pe_session.h has the command line). Built with mingw-w64 from
// the runtime's standard-library-only sources.
#include "pe_session.h"

#include "hotforge/core/bytes.h"

#include <windows.h>
#include <bcrypt.h>

#include <cstdio>
#include <deque>
#include <fcntl.h>
#include <io.h>

namespace hotforge::pe {

std::array<uint8_t, 32> fileSha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, 32> digest{};
  BCRYPT_ALG_HANDLE algorithm = nullptr;
  BCRYPT_HASH_HANDLE hash = nullptr;
  if (BCryptOpenAlgorithmProvider(&algorithm, BCRYPT_SHA256_ALGORITHM, nullptr, 0) == 0) {
    if (BCryptCreateHash(algorithm, &hash, nullptr, 0, nullptr, 0, 0) == 0) {
      BCryptHashData(hash, const_cast<PUCHAR>(bytes.data()), ULONG(bytes.size()), 0);
      BCryptFinishHash(hash, digest.data(), ULONG(digest.size()), 0);
      BCryptDestroyHash(hash);
    }
    BCryptCloseAlgorithmProvider(algorithm, 0);
  }
  return digest;  // all zero on failure, which matches no baseline
}

namespace {

std::string lastError(const char *what) { return std::string(what) + " failed, error " + std::to_string(GetLastError()); }

DWORD protectionOf(const Permissions &p) {
  if (p.execute) return p.write ? PAGE_EXECUTE_READWRITE : PAGE_EXECUTE_READ;
  return p.write ? PAGE_READWRITE : PAGE_READONLY;
}

class NativeProcess final : public PeProcess {
public:
  explicit NativeProcess(HMODULE base) : base_(base) {}

  Machine machine() const override { return Machine::X64; }
  uint64_t baseAddress() const override { return uint64_t(base_); }

  Outcome<uint64_t> exportAddress(const std::string &name) override {
    if (FARPROC function = GetProcAddress(base_, name.c_str())) return uint64_t(function);
    return fail("the base exports no ", name);
  }

  Outcome<uint64_t> importAddress(const PatchImport &import) override {
    HMODULE dll = LoadLibraryA(import.library.c_str());
    if (!dll) return fail(lastError("LoadLibrary"));
    if (FARPROC function = GetProcAddress(dll, import.symbol.c_str())) return uint64_t(function);
    return fail(import.library, " exports no ", import.symbol);
  }

  Outcome<uint64_t> call(uint64_t function, const std::vector<uint64_t> &arguments) override {
    // The x64 calling convention lets a caller pass more arguments than the callee reads.
    using Function = uint64_t (*)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
    uint64_t a[8] = {};
    std::copy(arguments.begin(), arguments.end(), a);
    return reinterpret_cast<Function>(function)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
  }

  uint64_t placeString(const std::string &text) override { return uint64_t(strings_.emplace_back(text).c_str()); }
  std::string readString(uint64_t address) override { return reinterpret_cast<const char *>(address); }

  void onNewThread(const std::function<void()> &work) override {
    auto run = [](void *w) -> DWORD {
      (*static_cast<const std::function<void()> *>(w))();
      return 0;
    };
    HANDLE thread = CreateThread(nullptr, 0, run, const_cast<std::function<void()> *>(&work), 0, nullptr);
    WaitForSingleObject(thread, INFINITE);
    CloseHandle(thread);
  }

  // The first free region above the base, at allocation granularity, that ends within 2 GiB of it.
  Outcome<uint64_t> reserveNear(uint32_t size) override {
    SYSTEM_INFO system;
    GetSystemInfo(&system);
    uint64_t granularity = system.dwAllocationGranularity, limit = baseAddress() + 0x7fff0000ull - size;
    MEMORY_BASIC_INFORMATION region;
    for (uint64_t at = alignTo(baseAddress() + 1, granularity); at <= limit;
         at = alignTo(uint64_t(region.BaseAddress) + region.RegionSize, granularity)) {
      if (!VirtualQuery(reinterpret_cast<void *>(at), &region, sizeof region)) break;
      if (region.State != MEM_FREE || uint64_t(region.BaseAddress) + region.RegionSize - at < size) continue;
      if (void *memory = VirtualAlloc(reinterpret_cast<void *>(at), size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE))
        return uint64_t(memory);
    }
    return fail("no free memory within 2 GiB above the base at ", hexAddress(baseAddress()));
  }

  Status installImage(const PatchImage &image, uint64_t address, std::span<const uint8_t> memory) override {
    std::copy(memory.begin(), memory.end(), reinterpret_cast<uint8_t *>(address));
    for (const PatchSection &s : image.sections) {
      DWORD old = 0;
      if (s.memorySize && !VirtualProtect(reinterpret_cast<void *>(address + s.rva), s.memorySize, protectionOf(s.permissions), &old))
        return fail(lastError("VirtualProtect"), " on the image's ", s.name);
      // Stack walks and exceptions through patch code need its unwind data registered.
      if (s.name == ".pdata" &&
          !RtlAddFunctionTable(reinterpret_cast<PRUNTIME_FUNCTION>(address + s.rva), s.memorySize / sizeof(RUNTIME_FUNCTION), address))
        return fail("RtlAddFunctionTable failed for the image's .pdata");
    }
    FlushInstructionCache(GetCurrentProcess(), reinterpret_cast<void *>(address), memory.size());
    return success();
  }

  void releaseImage(const PatchImage &image, uint64_t address) override {
    for (const PatchSection &s : image.sections)
      if (s.name == ".pdata") RtlDeleteFunctionTable(reinterpret_cast<PRUNTIME_FUNCTION>(address + s.rva));
    VirtualFree(reinterpret_cast<void *>(address), 0, MEM_RELEASE);
  }

  void read(uint64_t address, std::span<uint8_t> out) override {
    std::copy_n(reinterpret_cast<const uint8_t *>(address), out.size(), out.begin());
  }

  Status writeCode(uint64_t address, std::span<const uint8_t> bytes) override {
    void *at = reinterpret_cast<void *>(address);
    DWORD old = 0;
    if (!VirtualProtect(at, bytes.size(), PAGE_EXECUTE_READWRITE, &old)) return fail(lastError("VirtualProtect"), " at ", hexAddress(address));
    std::copy(bytes.begin(), bytes.end(), static_cast<uint8_t *>(at));
    VirtualProtect(at, bytes.size(), old, &old);
    FlushInstructionCache(GetCurrentProcess(), at, bytes.size());
    return success();
  }

private:
  HMODULE base_;
  std::deque<std::string> strings_;  // a deque keeps every string where it was placed
};

}  // namespace
}  // namespace hotforge::pe

int main(int argc, char **argv) {
  _setmode(_fileno(stdout), _O_BINARY);  // "\n", not "\r\n": the same lines as the emulator prints
  return hotforge::pe::runApplier(argc, argv, [](const std::string &path) -> hotforge::Outcome<std::unique_ptr<hotforge::pe::PeProcess>> {
    // The altered search path (which wants a full path) finds the base's imports (hfplat.dll) next to it.
    char full[MAX_PATH];
    if (!GetFullPathNameA(path.c_str(), MAX_PATH, full, nullptr)) return hotforge::fail("bad path ", path);
    HMODULE base = LoadLibraryExA(full, nullptr, LOAD_WITH_ALTERED_SEARCH_PATH);
    if (!base) return hotforge::fail("cannot load ", path, ": ", hotforge::pe::lastError("LoadLibraryEx"));
    return std::unique_ptr<hotforge::pe::PeProcess>(std::make_unique<hotforge::pe::NativeProcess>(base));
  });
}
