// hotforge-pe-emulate: applies a PE Arm64 hotpatch image to a DLL run in Unicorn, since no
// Windows on Arm64 is at hand. It maps the base DLL as the Windows loader would (sections at the
// image base, base relocations, imports resolved by mapping the DLLs they name from the base's
// directory, a TEB with thread-local storage), maps the image within ±4 GiB of it, applies the
// records (fixups, redirects) and calls the DLL's exported functions before, while and after the
// patch is in place (pe_session.h has the command line).
#include "pe_file.h"
#include "pe_session.h"

#include "hotforge/core/ascii.h"
#include "hotforge/core/bytes.h"

#include <unicorn/unicorn.h>

#include <algorithm>
#include <deque>

namespace hotforge::pe {

std::array<uint8_t, 32> fileSha256(std::span<const uint8_t> bytes) { return sha256(bytes); }

namespace {

// Where the emulated process keeps what is not a module: far below the DLLs' 0x180000000.
constexpr uint64_t kStackAddress = 0x10000000, kStackSize = 0x100000;
constexpr uint64_t kReturnSentinel = 0x20000000;  // calls return here; emulation stops on reaching it
constexpr uint64_t kTebAddress = 0x20001000;      // x18 points at the TEB on Windows Arm64
constexpr uint64_t kTebTlsPointer = 0x58;         // TEB.ThreadLocalStoragePointer
constexpr uint64_t kTlsArrayOffset = 0x800;       // the per-module TLS block pointers, inside the TEB page
constexpr uint64_t kScratchAddress = 0x30000000, kScratchSize = 0x1000000;  // strings and TLS blocks
constexpr uint64_t kModuleAlignment = 0x10000;
constexpr uint64_t kPageSize = 0x1000;  // Windows' page; Unicorn's own may be smaller (1 KiB on Arm)
constexpr uint64_t kInstructionLimit = 10'000'000;  // per call: a runaway call is an error, not a hang
constexpr uint64_t kReach = 0x100000000;            // ADRP: ±4 GiB

// A module's bytes as mapped (RVA = offset); reads past the end give 0 and set `overrun`.
struct MappedBytes {
  std::vector<uint8_t> bytes;
  mutable bool overrun = false;

  uint64_t read(uint64_t at, unsigned size) const {
    if (at > bytes.size() || bytes.size() - at < size) {
      overrun = true;
      return 0;
    }
    return size == 8 ? readLe64(&bytes[at]) : size == 4 ? readLe32(&bytes[at]) : readLe16(&bytes[at]);
  }
  // Writes past the end are dropped and set `overrun`.
  void write64(uint64_t at, uint64_t value) {
    if (at > bytes.size() || bytes.size() - at < 8) overrun = true;
    else writeLe64(&bytes[at], value);
  }
  std::string cString(uint64_t at) const {
    std::string text;
    for (; at < bytes.size() && bytes[at]; ++at) text.push_back(char(bytes[at]));
    if (at >= bytes.size()) overrun = true;
    return text;
  }
};

struct Module {
  std::string name;  // file name, lower case
  uint64_t address = 0;
  PeFile pe;
  MappedBytes memory;
};

// A module's IMAGE_TLS_DIRECTORY64: each new thread gets a copy of its template.
struct ThreadLocalTemplate {
  uint64_t start = 0, end = 0, zeroFill = 0;
};

class EmulatedProcess final : public PeProcess {
public:
  EmulatedProcess() = default;
  EmulatedProcess(const EmulatedProcess &) = delete;
  EmulatedProcess &operator=(const EmulatedProcess &) = delete;
  ~EmulatedProcess() override {
    if (uc_) uc_close(uc_);
  }

  Status start(const std::string &basePath) {
    if (uc_err err = uc_open(UC_ARCH_ARM64, UC_MODE_ARM, &uc_); err != UC_ERR_OK) {
      uc_ = nullptr;
      return fail("cannot start Unicorn: ", uc_strerror(err));
    }
    for (auto [address, size] : {std::pair{kStackAddress, kStackSize}, {kReturnSentinel, kPageSize}, {kTebAddress, kPageSize},
                                 {kScratchAddress, kScratchSize}})
      if (uc_err err = uc_mem_map(uc_, address, size, UC_PROT_READ | UC_PROT_WRITE); err != UC_ERR_OK)
        return fail("cannot map emulator memory at ", hexAddress(address), ": ", uc_strerror(err));
    directory_ = basePath.substr(0, basePath.find_last_of('/') + 1);
    Outcome<const Module *> base = load(directory_, basePath.substr(directory_.size()));
    if (!base) return std::move(base).failure();
    base_ = *base;
    return success();
  }

  Machine machine() const override { return Machine::Arm64; }
  uint64_t baseAddress() const override { return base_->address; }

  Outcome<uint64_t> exportAddress(const std::string &name) override { return exportOf(*base_, name); }

  // As for the DLLs' own imports: the DLL is loaded from the base's directory (once), then its
  // export is looked up.
  Outcome<uint64_t> importAddress(const PatchImport &import) override {
    Outcome<const Module *> dll = load(directory_, import.library);
    if (!dll) return std::move(dll).failure();
    return exportOf(**dll, import.symbol);
  }

  Outcome<uint64_t> call(uint64_t function, const std::vector<uint64_t> &arguments) override {
    for (size_t i = 0; i < arguments.size(); ++i) uc_reg_write(uc_, UC_ARM64_REG_X0 + int(i), &arguments[i]);
    uint64_t stackTop = kStackAddress + kStackSize - 0x100, returnTo = kReturnSentinel, teb = kTebAddress;
    uc_reg_write(uc_, UC_ARM64_REG_SP, &stackTop);
    uc_reg_write(uc_, UC_ARM64_REG_LR, &returnTo);
    uc_reg_write(uc_, UC_ARM64_REG_X18, &teb);
    uc_err err = uc_emu_start(uc_, function, kReturnSentinel, 0, kInstructionLimit);
    uint64_t pc = 0, result = 0;
    uc_reg_read(uc_, UC_ARM64_REG_PC, &pc);
    if (err != UC_ERR_OK) return fail(uc_strerror(err), " at pc ", hexAddress(pc));
    if (pc != kReturnSentinel) return fail("no return within ", kInstructionLimit, " instructions (pc ", hexAddress(pc), ")");
    uc_reg_read(uc_, UC_ARM64_REG_X0, &result);
    return result;
  }

  uint64_t placeString(const std::string &text) override {
    uint64_t address = scratch(text.size() + 1);
    uc_mem_write(uc_, address, text.c_str(), text.size() + 1);
    return address;
  }

  std::string readString(uint64_t address) override {
    std::string text;
    for (char c = 0; text.size() < 4096 && uc_mem_read(uc_, address + text.size(), &c, 1) == UC_ERR_OK && c;) text.push_back(c);
    return text;
  }

  // A new thread is a new set of TLS blocks in the TEB, each a fresh copy of its module's template.
  void onNewThread(const std::function<void()> &work) override {
    uint64_t tlsArray = kTebAddress + kTlsArrayOffset;
    uc_mem_write(uc_, kTebAddress + kTebTlsPointer, &tlsArray, 8);
    for (size_t index = 0; index < threadLocals_.size(); ++index) {
      const ThreadLocalTemplate &t = threadLocals_[index];
      std::vector<uint8_t> block(t.end - t.start + t.zeroFill);
      uint64_t address = scratch(block.size());
      uc_mem_read(uc_, t.start, block.data(), t.end - t.start);
      uc_mem_write(uc_, address, block.data(), block.size());
      uc_mem_write(uc_, tlsArray + 8 * index, &address, 8);
    }
    work();
  }

  Outcome<uint64_t> reserveNear(uint32_t size) override {
    uint64_t address = nextModule_;
    if (address + size - baseAddress() > kReach) return fail("no memory left within 4 GiB of the base");
    if (uc_err err = uc_mem_map(uc_, address, alignTo(size, kPageSize), UC_PROT_READ | UC_PROT_WRITE); err != UC_ERR_OK)
      return fail("cannot map ", size, " bytes at ", hexAddress(address), ": ", uc_strerror(err));
    nextModule_ = alignTo(address + size, kModuleAlignment);
    return address;
  }

  Status installImage(const PatchImage &image, uint64_t address, std::span<const uint8_t> memory) override {
    uc_mem_write(uc_, address, memory.data(), memory.size());
    for (const PatchSection &s : image.sections)
      if (Status p = protect(address + s.rva, s.memorySize, s.permissions); !p) return p;
    return success();
  }

  void releaseImage(const PatchImage &image, uint64_t address) override {
    uc_mem_unmap(uc_, address, alignTo(image.imageSize, kPageSize));
    uc_ctl_remove_cache(uc_, address, address + image.imageSize);
  }

  void read(uint64_t address, std::span<uint8_t> out) override { uc_mem_read(uc_, address, out.data(), out.size()); }

  // Unicorn writes through page protection; dropping the translated blocks is its instruction-cache flush.
  Status writeCode(uint64_t address, std::span<const uint8_t> bytes) override {
    if (uc_err err = uc_mem_write(uc_, address, bytes.data(), bytes.size()); err != UC_ERR_OK)
      return fail("cannot write code at ", hexAddress(address), ": ", uc_strerror(err));
    uc_ctl_remove_cache(uc_, address, address + bytes.size());
    return success();
  }

private:
  uint64_t scratch(uint64_t size) {
    uint64_t address = scratchNext_;
    scratchNext_ = alignTo(scratchNext_ + size, 16);
    return address;
  }

  Status protect(uint64_t address, uint64_t size, const Permissions &p) {
    if (!size) return success();
    uint32_t perms = (p.read ? UC_PROT_READ : 0) | (p.write ? UC_PROT_WRITE : 0) | (p.execute ? UC_PROT_EXEC : 0);
    if (uc_err err = uc_mem_protect(uc_, address, alignTo(size, kPageSize), perms); err != UC_ERR_OK)
      return fail("cannot protect ", hexAddress(address), ": ", uc_strerror(err));
    return success();
  }

  Outcome<uint64_t> exportOf(const Module &module, const std::string &name) {
    DataDirectory exports = module.pe.directories[kExportDirectory];
    const MappedBytes &m = module.memory;
    uint32_t names = uint32_t(m.read(exports.rva + 24, 4)), functions = uint32_t(m.read(exports.rva + 28, 4)),
             nameTable = uint32_t(m.read(exports.rva + 32, 4)), ordinals = uint32_t(m.read(exports.rva + 36, 4));
    for (uint32_t i = 0; exports.size && i < names && !m.overrun; ++i) {
      if (m.cString(m.read(nameTable + 4 * i, 4)) != name) continue;
      uint64_t rva = m.read(functions + 4 * m.read(ordinals + 2 * i, 2), 4);
      if (rva >= exports.rva && rva < uint64_t(exports.rva) + exports.size)
        return fail(module.name, ": ", name, " is forwarded, which this emulator does not follow");
      if (!m.overrun) return module.address + rva;
    }
    if (m.overrun) return fail(module.name, ": the export table lies outside the image");
    return fail(module.name, " exports no ", name);
  }

  // Maps a DLL and, first, every DLL it imports from (loaded once each, by file name).
  Outcome<const Module *> load(const std::string &directory, const std::string &fileName) {
    for (const Module &m : modules_)
      if (m.name == asciiLower(fileName)) return &m;
    // A module is listed once its imports are resolved, so one that imports itself, directly or
    // not, would recurse without end.
    if (std::find(loading_.begin(), loading_.end(), asciiLower(fileName)) != loading_.end())
      return fail(fileName, " imports itself (through ", loading_.back(), "), which this emulator does not load");
    Outcome<std::vector<uint8_t>> read = readWholeFile(directory + fileName);
    if (!read) return std::move(read).failure();
    const std::vector<uint8_t> &file = *read;
    Outcome<PeFile> pe = readPeFile(file);
    if (!pe) return fail(fileName, ": ", pe.error());
    if (pe->machine != kMachineArm64) return fail(fileName, " is not an Arm64 DLL");
    if (pe->entryRva) return fail(fileName, " has a DllMain, which this emulator does not run");
    // The base goes where it prefers to be; the DLLs it imports and the patch image go above it.
    Module module{asciiLower(fileName), nextModule_ ? nextModule_ : pe->imageBase, *pe, {}};
    MappedBytes &m = module.memory;
    m.bytes.assign(alignTo(pe->sizeOfImage, kPageSize), 0);
    std::copy_n(file.begin(), std::min<size_t>({pe->sizeOfHeaders, file.size(), m.bytes.size()}), m.bytes.begin());
    for (const PeSection &s : pe->sections)
      std::copy_n(file.begin() + s.rawOffset, s.fileBytes(), m.bytes.begin() + s.rva);
    nextModule_ = alignTo(module.address + m.bytes.size(), kModuleAlignment);
    if (Status relocated = relocate(module); !relocated) return std::move(relocated).failure();
    loading_.push_back(module.name);
    Status imported = resolveImports(module, directory);
    loading_.pop_back();
    if (!imported) return std::move(imported).failure();
    if (uc_err err = uc_mem_map(uc_, module.address, m.bytes.size(), UC_PROT_READ); err != UC_ERR_OK)
      return fail("cannot map ", fileName, " at ", hexAddress(module.address), ": ", uc_strerror(err));
    uc_mem_write(uc_, module.address, m.bytes.data(), m.bytes.size());
    for (const PeSection &s : pe->sections) {
      constexpr uint32_t kExecute = 0x20000000, kRead = 0x40000000, kWrite = 0x80000000;
      Permissions p{(s.characteristics & kRead) != 0, (s.characteristics & kWrite) != 0, (s.characteristics & kExecute) != 0};
      if (Status protectedSection = protect(module.address + s.rva, s.memorySize(), p); !protectedSection)
        return std::move(protectedSection).failure();
    }
    if (Status tls = setUpThreadLocals(module); !tls) return std::move(tls).failure();
    modules_.push_back(std::move(module));
    return &modules_.back();
  }

  // IMAGE_REL_BASED_DIR64 entries, for a DLL not at its preferred base (hfplat.dll and core.*.dll
  // both prefer 0x180000000).
  Status relocate(Module &module) {
    uint64_t delta = module.address - module.pe.imageBase;
    DataDirectory relocations = module.pe.directories[kRelocationDirectory];
    MappedBytes &m = module.memory;
    constexpr unsigned kAbsolute = 0, kDir64 = 10;
    for (uint64_t block = relocations.rva; delta && block + 8 <= uint64_t(relocations.rva) + relocations.size;) {
      uint32_t page = uint32_t(m.read(block, 4)), blockSize = uint32_t(m.read(block + 4, 4));
      if (blockSize < 8 || m.overrun) return fail(module.name, ": bad base relocation block at rva ", hexAddress(block));
      for (uint64_t entry = block + 8; entry + 2 <= block + blockSize; entry += 2) {
        uint16_t value = uint16_t(m.read(entry, 2));
        uint64_t site = page + (value & 0xfff);
        if (value >> 12 == kAbsolute) continue;
        if (value >> 12 != kDir64) return fail(module.name, ": base relocation type ", value >> 12, " is not supported");
        m.write64(site, m.read(site, 8) + delta);
        if (m.overrun) return fail(module.name, ": a base relocation lies outside the image");
      }
      block += blockSize;
    }
    return success();
  }

  // Fills the import address table of `module` from the exports of the DLLs it names.
  Status resolveImports(Module &module, const std::string &directory) {
    DataDirectory imports = module.pe.directories[kImportDirectory];
    MappedBytes &m = module.memory;
    constexpr uint64_t kDescriptorSize = 20, kByOrdinal = uint64_t(1) << 63;
    for (uint64_t d = imports.rva; imports.size && m.read(d + 12, 4); d += kDescriptorSize) {
      std::string dllName = m.cString(m.read(d + 12, 4));
      uint64_t lookup = m.read(d, 4), slots = m.read(d + 16, 4);
      if (m.overrun) return fail(module.name, ": the import table lies outside the image");
      Outcome<const Module *> dll = load(directory, dllName);
      if (!dll) return std::move(dll).failure();
      for (uint64_t i = 0;; ++i) {
        uint64_t entry = m.read((lookup ? lookup : slots) + 8 * i, 8);
        if (!entry || m.overrun) break;
        if (entry & kByOrdinal) return fail(module.name, ": import by ordinal from ", dllName, " is not supported");
        Outcome<uint64_t> address = exportOf(**dll, m.cString(entry + 2));  // after the 2-byte hint
        if (!address) return std::move(address).failure();
        m.write64(slots + 8 * i, *address);
      }
      if (m.overrun) return fail(module.name, ": an import lies outside the image");
    }
    return success();
  }

  // Gives a module with a TLS directory the next TLS index (written to its AddressOfIndex).
  Status setUpThreadLocals(Module &module) {
    DataDirectory tls = module.pe.directories[kTlsDirectory];
    if (!tls.size) return success();
    MappedBytes &m = module.memory;
    ThreadLocalTemplate t{m.read(tls.rva, 8), m.read(tls.rva + 8, 8), m.read(tls.rva + 32, 4)};
    uint64_t indexAddress = m.read(tls.rva + 16, 8), callbacks = m.read(tls.rva + 24, 8);
    // Each thread's blocks come from the scratch memory; a template that cannot fit there is bad.
    if (m.overrun || t.end < t.start || t.end - t.start + t.zeroFill > kScratchSize / 4)
      return fail(module.name, ": bad TLS directory");
    uint64_t firstCallback = 0;
    uc_mem_read(uc_, callbacks, &firstCallback, 8);
    if (callbacks && firstCallback) return fail(module.name, " has TLS callbacks, which this emulator does not run");
    uint32_t index = uint32_t(threadLocals_.size());
    if (uc_err err = uc_mem_write(uc_, indexAddress, &index, 4); err != UC_ERR_OK)
      return fail(module.name, ": cannot write the TLS index at ", hexAddress(indexAddress));
    threadLocals_.push_back(t);
    return success();
  }

  uc_engine *uc_ = nullptr;
  std::deque<Module> modules_;  // a deque keeps each module where it was loaded
  const Module *base_ = nullptr;
  std::string directory_;        // the base's, where its DLLs are found
  uint64_t nextModule_ = 0;      // where the next DLL or patch image goes, above the base
  uint64_t scratchNext_ = kScratchAddress;
  std::vector<ThreadLocalTemplate> threadLocals_;  // by TLS index
  std::vector<std::string> loading_;  // the modules whose imports are being resolved, outermost first
};

}  // namespace
}  // namespace hotforge::pe

int main(int argc, char **argv) {
  return hotforge::pe::runApplier(argc, argv, [](const std::string &path) -> hotforge::Outcome<std::unique_ptr<hotforge::pe::PeProcess>> {
    auto process = std::make_unique<hotforge::pe::EmulatedProcess>();
    if (hotforge::Status started = process->start(path); !started) return std::move(started).failure();
    return std::unique_ptr<hotforge::pe::PeProcess>(std::move(process));
  });
}
