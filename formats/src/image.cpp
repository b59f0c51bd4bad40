// Format-independent parts of the reader: opening the file, dispatching to a FormatReader,
// hashing, the merged function table and the Image accessors.
#include "format_reader.h"

#include <llvm/Object/Binary.h>
#include <llvm/Object/COFF.h>
#include <llvm/Object/ELFObjectFile.h>
#include <llvm/Support/Endian.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/TimeProfiler.h>

#include <algorithm>

#include <sys/mman.h>
#include <unistd.h>

namespace hotforge {

using namespace llvm;

std::string_view functionSourceName(FunctionSource source) {
  switch (source) {
  case FunctionSource::Symtab: return "symtab";
  case FunctionSource::DebugFile: return "debug-file";
  case FunctionSource::Pdb: return "pdb";
  case FunctionSource::Dwarf: return "dwarf";
  case FunctionSource::Dynsym: return "dynsym";
  case FunctionSource::Pdata: return "pdata";
  case FunctionSource::EhFrame: return "eh-frame";
  case FunctionSource::Exports: return "exports";
  case FunctionSource::Code: return "code";
  }
  return "unknown";
}

std::string_view dataSourceName(DataSource source) {
  switch (source) {
  case DataSource::Symtab: return "symtab";
  case DataSource::DebugFile: return "debug-file";
  case DataSource::Pdb: return "pdb";
  case DataSource::Dynsym: return "dynsym";
  }
  return "unknown";
}

std::string_view importKindName(ImportKind kind) {
  switch (kind) {
  case ImportKind::PltSlot: return "plt";
  case ImportKind::GotSlot: return "got";
  case ImportKind::IatSlot: return "iat";
  }
  return "unknown";
}

std::string guidString(const std::array<uint8_t, 16> &g) {
  char text[40];
  snprintf(text, sizeof text, "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X", g[3], g[2], g[1],
           g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
  return text;
}

const Section *Image::sectionAt(uint64_t rva) const {
  if (!sectionIndex_.empty()) {
    auto after = std::upper_bound(sectionIndex_.begin(), sectionIndex_.end(), rva,
                                  [](uint64_t address, const SectionSpan &span) { return address < span.begin; });
    if (after == sectionIndex_.begin() || rva >= std::prev(after)->end) return nullptr;
    return &sections[std::prev(after)->index];
  }
  for (const Section &s : sections)
    if (s.loaded && rva >= s.rva && rva - s.rva < s.size) return &s;
  return nullptr;
}

void Image::indexSections() {
  sectionIndex_.clear();
  std::vector<SectionSpan> spans;
  for (size_t i = 0; i < sections.size(); ++i)
    if (sections[i].loaded && sections[i].size && sections[i].rva + sections[i].size > sections[i].rva)
      spans.push_back({sections[i].rva, sections[i].rva + sections[i].size, i});
  std::sort(spans.begin(), spans.end(), [](const SectionSpan &a, const SectionSpan &b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].begin < spans[i - 1].end) return;  // overlapping: which one comes first in `sections` decides
  sectionIndex_ = std::move(spans);
}

const std::string *Image::keepRelocationName(std::string_view name) {
  if (auto kept = relocationNames_.find(name); kept != relocationNames_.end()) return &*kept;
  return &*relocationNames_.emplace(name).first;
}

ArrayRef<uint8_t> Image::bytesAt(uint64_t rva, uint64_t size) const {
  const Section *s = sectionAt(rva);
  if (!s || !buffer_) return {};
  uint64_t offsetInSection = rva - s->rva;
  if (offsetInSection > s->fileSize || s->fileSize - offsetInSection < size) return {};
  uint64_t fileOffset = s->fileOffset + offsetInSection;
  if (fileOffset > buffer_->getBufferSize() || buffer_->getBufferSize() - fileOffset < size) return {};
  return {reinterpret_cast<const uint8_t *>(buffer_->getBufferStart()) + fileOffset, size};
}

const Function *Image::functionAt(uint64_t rva) const {
  auto it = std::upper_bound(functions.begin(), functions.end(), rva,
                             [](uint64_t a, const Function &f) { return a < f.range.rva; });
  if (it == functions.begin()) return nullptr;
  --it;
  return it->range.contains(rva) ? &*it : nullptr;
}

ArrayRef<uint8_t> Image::fileBytes() const {
  if (!buffer_) return {};
  return {reinterpret_cast<const uint8_t *>(buffer_->getBufferStart()), buffer_->getBufferSize()};
}

void Image::releaseFilePages() const {
  // Only a read-only file mapping can be dropped: anonymous memory would come back as zeros.
  // (MemoryBuffer::dontNeedIfMmap uses posix_madvise, which glibc ignores for DONTNEED.)
  if (!buffer_ || buffer_->getBufferKind() != MemoryBuffer::MemoryBuffer_MMap) return;
  uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  uintptr_t begin = reinterpret_cast<uintptr_t>(buffer_->getBufferStart()) & ~(page - 1);
  uintptr_t end = reinterpret_cast<uintptr_t>(buffer_->getBufferEnd());
  madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

namespace detail {

std::string hexOffset(uint64_t value) {
  char text[24];
  snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(value));
  return text;
}

void FunctionTableBuilder::add(uint64_t rva, uint64_t size, std::optional<std::string> name, FunctionSource source,
                               bool preferredName) {
  sightings_.push_back({rva, size, std::move(name), source, preferredName});
}

void FunctionTableBuilder::addPart(uint64_t parentRva, AddressRange part) { parts_.push_back({parentRva, part}); }

std::vector<Function> FunctionTableBuilder::finish(const std::vector<Section> &sections) {
  // By start, and in the order they came within one start: sorting (rva, index) keys is far
  // cheaper than moving the sightings, which hold names.
  std::vector<std::pair<uint64_t, uint32_t>> order(sightings_.size());
  for (size_t i = 0; i < sightings_.size(); ++i) order[i] = {sightings_[i].rva, uint32_t(i)};
  std::sort(order.begin(), order.end());
  size_t starts = 0;
  for (size_t k = 0; k < order.size(); ++k) starts += k == 0 || order[k].first != order[k - 1].first;
  std::vector<Function> out;
  out.reserve(starts);
  for (size_t k = 0; k < order.size();) {
    Function f;
    f.range.rva = order[k].first;
    bool hasSize = false, nameFromPreferred = false, first = true;
    std::optional<FunctionSource> nameSource;
    for (; k < order.size() && order[k].first == f.range.rva; ++k) {
      Sighting &s = sightings_[order[k].second];
      f.sourceMask |= 1u << static_cast<unsigned>(s.source);
      // The size (and so the boundary) comes from the best source that has one.
      if (s.size && (!hasSize || s.source < f.source)) {
        f.range.size = s.size;
        f.source = s.source;
        hasSize = true;
      } else if (!hasSize && (first || s.source < f.source)) {
        f.source = s.source;
      }
      first = false;
      if (s.name && !s.name->empty()) {
        bool better = !nameSource || s.source < *nameSource ||
                      (s.source == *nameSource && (s.preferredName > nameFromPreferred ||
                                                   (s.preferredName == nameFromPreferred && *s.name < *f.name)));
        if (better) {
          f.name = std::move(s.name);
          f.nameSource = s.source;
          nameSource = s.source;
          nameFromPreferred = s.preferredName;
        }
      }
    }
    out.push_back(std::move(f));
  }
  sightings_.clear();
  for (auto &[parent, part] : parts_) {
    auto it = std::lower_bound(out.begin(), out.end(), parent, [](const Function &f, uint64_t a) { return f.range.rva < a; });
    if (it != out.end() && it->range.rva == parent) it->parts.push_back(part);
  }
  parts_.clear();
  // Infer missing sizes: up to the next known start, but never past the end of the section.
  for (size_t i = 0; i < out.size(); ++i) {
    Function &f = out[i];
    std::sort(f.parts.begin(), f.parts.end(),
              [](const AddressRange &a, const AddressRange &b) { return a.rva < b.rva; });
    if (f.range.size) continue;
    uint64_t limit = 0;
    for (const Section &s : sections)
      if (s.loaded && s.permissions.execute && f.range.rva >= s.rva && f.range.rva < s.rva + s.size)
        limit = s.rva + s.size;
    if (i + 1 < out.size() && (limit == 0 || out[i + 1].range.rva < limit)) limit = out[i + 1].range.rva;
    if (limit > f.range.rva) f.range.size = limit - f.range.rva;
    f.sizeInferred = true;
  }
  return out;
}

void sortAndDedupDataObjects(std::vector<DataObject> &objects, const std::vector<Section> *inferSizesWithin) {
  std::sort(objects.begin(), objects.end(), [](const DataObject &a, const DataObject &b) {
    return std::tie(a.threadLocal, a.range.rva, a.name, a.source) <
           std::tie(b.threadLocal, b.range.rva, b.name, b.source);
  });
  // The same object seen by several sources keeps its best-ranked (first after sorting) record.
  objects.erase(std::unique(objects.begin(), objects.end(),
                            [](const DataObject &a, const DataObject &b) {
                              return a.threadLocal == b.threadLocal && a.range.rva == b.range.rva &&
                                     a.name == b.name;
                            }),
                objects.end());
  if (!inferSizesWithin) return;
  const std::vector<Section> &sections = *inferSizesWithin;
  for (size_t i = 0; i < objects.size(); ++i) {
    DataObject &d = objects[i];
    if (d.sizeKnown || d.threadLocal) continue;
    uint64_t limit = 0;
    for (const Section &s : sections)
      if (s.loaded && d.range.rva >= s.rva && d.range.rva < s.rva + s.size) limit = s.rva + s.size;
    for (size_t j = i + 1; j < objects.size(); ++j)
      if (objects[j].range.rva > d.range.rva) {
        if (!objects[j].threadLocal && (limit == 0 || objects[j].range.rva < limit)) limit = objects[j].range.rva;
        break;
      }
    if (limit > d.range.rva) d.range.size = limit - d.range.rva;
    d.sizeKnown = false;
  }
}

namespace {

const std::vector<const FormatReader *> &formatReaders() {
  static const std::vector<const FormatReader *> readers = {&elfReader(), &peReader()};
  return readers;
}

// A short description of what the first bytes look like, for "not a binary" errors.
std::string describeMagic(StringRef bytes) {
  if (bytes.empty()) return "the file is empty";
  // LLVM only recognises an MZ file as PE when e_lfanew (at 0x3c) leads to "PE\0\0": say so
  // rather than call a truncated or damaged PE image "neither ELF nor PE".
  if (bytes.starts_with("MZ")) {
    if (bytes.size() < 0x40) return "offset 0x0: an MZ header cut short before e_lfanew (0x3c): not a complete PE image";
    uint32_t peOffset = support::endian::read32le(bytes.data() + 0x3c);
    return "offset 0x3c: the MZ header's e_lfanew " + hexOffset(peOffset) +
           " does not lead to a PE signature within the file's " + std::to_string(bytes.size()) + " bytes";
  }
  std::string hex = hexEncode(ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(bytes.data()),
                                            std::min<size_t>(bytes.size(), 4)));
  return "offset 0x0: magic bytes " + hex + " are neither ELF (7f454c46) nor PE (4d5a)";
}

}  // namespace
}  // namespace detail

Expected<Image> readImage(std::unique_ptr<MemoryBuffer> buffer, const ImageReadOptions &options) {
  std::string name = buffer->getBufferIdentifier().str();
  auto fail = [&](const Twine &what) { return makeError(name + ": " + what); };

  Expected<std::unique_ptr<object::Binary>> binary = object::createBinary(buffer->getMemBufferRef());
  if (!binary) {
    std::string reason = errorText(binary.takeError());
    if (reason == "The file was not recognized as a valid object file")
      reason = detail::describeMagic(buffer->getBuffer());
    return fail(reason);
  }
  auto *object = dyn_cast<object::ObjectFile>(binary->get());
  if (!object) return fail("an archive or container, not a single executable image");

  for (const detail::FormatReader *reader : detail::formatReaders()) {
    if (!reader->handles(*object)) continue;
    Image image;
    image.path = name;
    {
      llvm::TimeTraceScope scope("read image", name);
      if (Error e = reader->read(*object, options, image)) return fail(errorText(std::move(e)));
      image.indexSections();
    }
    llvm::TimeTraceScope scope("identify and discover", name);
    image.identity.sha256 = sha256(
        ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(buffer->getBufferStart()), buffer->getBufferSize()));
    image.adoptBuffer(std::move(buffer));
    if (Error e = detail::discoverFunctionsFromCode(*reader, image)) return fail(errorText(std::move(e)));
    image.releaseFilePages();
    return image;
  }
  return fail("format '" + object->getFileFormatName() + "' is not supported (ELF64 and PE32+ are)");
}

Expected<std::unique_ptr<MemoryBuffer>> readFileBuffer(const std::string &path, uint64_t maxSize) {
  Outcome<RegularFile> file = RegularFile::open(path, maxSize);
  if (!file) return makeError(file.error());
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getOpenFile(sys::fs::convertFDToNativeFile(file->fd()), path, file->size(),
                                /*RequiresNullTerminator=*/false);
  if (!buffer) return makeError(path + ": " + buffer.getError().message());
  return std::move(*buffer);
}

Expected<Image> readImage(const std::string &path, const ImageReadOptions &options) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer = readFileBuffer(path);
  if (!buffer) return buffer.takeError();
  return readImage(std::move(*buffer), options);
}

}  // namespace hotforge
