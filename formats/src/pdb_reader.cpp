// Functions and data objects from a PDB, read with LLVM's native PDB reader by walking the module
// symbol streams (the IPDBSession enumeration API is not implemented for native PDBs in LLVM 19).
#include "format_reader.h"

#include <llvm/DebugInfo/CodeView/LazyRandomTypeCollection.h>
#include <llvm/DebugInfo/CodeView/SymbolDeserializer.h>
#include <llvm/DebugInfo/CodeView/SymbolRecord.h>
#include <llvm/DebugInfo/CodeView/TypeDeserializer.h>
#include <llvm/DebugInfo/CodeView/TypeRecord.h>
#include <llvm/DebugInfo/CodeView/TypeRecordHelpers.h>
#include <llvm/DebugInfo/MSF/MappedBlockStream.h>
#include <llvm/DebugInfo/PDB/Native/DbiModuleDescriptor.h>
#include <llvm/DebugInfo/PDB/Native/DbiModuleList.h>
#include <llvm/DebugInfo/PDB/Native/DbiStream.h>
#include <llvm/DebugInfo/PDB/Native/InfoStream.h>
#include <llvm/DebugInfo/PDB/Native/ModuleDebugStream.h>
#include <llvm/DebugInfo/PDB/Native/NativeSession.h>
#include <llvm/DebugInfo/PDB/Native/PDBFile.h>
#include <llvm/DebugInfo/PDB/Native/SymbolStream.h>
#include <llvm/DebugInfo/PDB/Native/TpiStream.h>
#include <llvm/Object/COFF.h>

namespace hotforge::detail {

using namespace llvm;

namespace {

// The size in bytes of a CodeView type, or 0 when it cannot be told (forward references, types
// the TPI stream does not hold). LLVM sizes simple types and aggregates; arrays, pointers,
// modifiers and enums are looked through here.
uint64_t typeSize(codeview::TypeIndex index, codeview::LazyRandomTypeCollection *types, int depth = 0) {
  using namespace codeview;
  if (index.isSimple()) return getSizeInBytesForTypeIndex(index);
  if (!types || depth > 8) return 0;
  std::optional<CVType> type = types->tryGetType(index);
  if (!type) return 0;
  if (isAggregate(*type)) return getSizeInBytesForTypeRecord(*type);
  auto deserialized = [&](auto record) -> std::optional<decltype(record)> {
    if (Error e = TypeDeserializer::deserializeAs(*type, record)) {
      consumeError(std::move(e));
      return std::nullopt;
    }
    return record;
  };
  switch (type->kind()) {
  case LF_ARRAY: {
    auto array = deserialized(ArrayRecord(TypeRecordKind::Array));
    return array ? array->getSize() : 0;
  }
  case LF_POINTER: {
    auto pointer = deserialized(PointerRecord(TypeRecordKind::Pointer));
    return pointer ? pointer->getSize() : 0;
  }
  case LF_MODIFIER: {
    auto modifier = deserialized(ModifierRecord(TypeRecordKind::Modifier));
    return modifier ? typeSize(modifier->getModifiedType(), types, depth + 1) : 0;
  }
  case LF_ENUM: {
    auto enumeration = deserialized(EnumRecord(TypeRecordKind::Enum));
    return enumeration ? typeSize(enumeration->getUnderlyingType(), types, depth + 1) : 0;
  }
  default: return 0;
  }
}

struct RecordVisitor {
  FixedStreamArray<object::coff_section> sections;
  FunctionTableBuilder &functions;
  std::vector<DataObject> &dataObjects;
  codeview::LazyRandomTypeCollection *types;

  void addData(std::string name, AddressRange range, bool threadLocal, codeview::TypeIndex type) {
    range.size = typeSize(type, types);
    DataObject d{std::move(name), range, threadLocal, DataSource::Pdb};
    // Without a size the object reaches to the next one (inferred later).
    d.sizeKnown = range.size != 0;
    dataObjects.push_back(std::move(d));
  }

  std::optional<uint64_t> rvaOf(uint16_t segment, uint32_t offset) const {
    if (segment == 0 || segment > sections.size()) return std::nullopt;
    return uint64_t(sections[segment - 1].VirtualAddress) + offset;
  }

  Error visit(const codeview::CVSymbol &symbol) {
    using namespace codeview;
    switch (symbol.kind()) {
    case S_GPROC32:
    case S_LPROC32:
    case S_GPROC32_ID:
    case S_LPROC32_ID: {
      Expected<ProcSym> proc = SymbolDeserializer::deserializeAs<ProcSym>(symbol);
      if (!proc) return proc.takeError();
      if (std::optional<uint64_t> rva = rvaOf(proc->Segment, proc->CodeOffset))
        functions.add(*rva, proc->CodeSize, proc->Name.str(), FunctionSource::Pdb,
                      symbol.kind() == S_GPROC32 || symbol.kind() == S_GPROC32_ID);
      break;
    }
    case S_GDATA32:
    case S_LDATA32: {
      Expected<DataSym> data = SymbolDeserializer::deserializeAs<DataSym>(symbol);
      if (!data) return data.takeError();
      if (std::optional<uint64_t> rva = rvaOf(data->Segment, data->DataOffset))
        addData(data->Name.str(), {*rva, 0}, false, data->Type);
      break;
    }
    case S_GTHREAD32:
    case S_LTHREAD32: {
      Expected<ThreadLocalDataSym> data = SymbolDeserializer::deserializeAs<ThreadLocalDataSym>(symbol);
      if (!data) return data.takeError();
      // TLS offsets are relative to the image's TLS template, like ELF STT_TLS values.
      addData(data->Name.str(), {data->DataOffset, 0}, true, data->Type);
      break;
    }
    default: break;
    }
    return Error::success();
  }
};

}  // namespace

Error readPdb(const std::string &pdbPath, const CodeViewRecord &expected, FunctionTableBuilder &functions,
              std::vector<DataObject> &dataObjects) {
  auto fail = [&](const Twine &what) { return makeError("PDB " + pdbPath + ": " + what); };
  std::unique_ptr<pdb::IPDBSession> session;
  Expected<std::unique_ptr<MemoryBuffer>> buffer = readFileBuffer(pdbPath);
  if (!buffer) return buffer.takeError();
  if (Error e = pdb::NativeSession::createFromPdb(std::move(*buffer), session)) return fail(errorText(std::move(e)));
  pdb::PDBFile &file = static_cast<pdb::NativeSession &>(*session).getPDBFile();

  Expected<pdb::InfoStream &> info = file.getPDBInfoStream();
  if (!info) return fail(errorText(info.takeError()));
  std::array<uint8_t, 16> guid;
  codeview::GUID stored = info->getGuid();  // returned by value: keep the copy alive
  std::copy(std::begin(stored.Guid), std::end(stored.Guid), guid.begin());
  if (guid != expected.guid || info->getAge() != expected.age)
    return fail("does not belong to the image: PDB has GUID " + guidString(guid) + " age " +
                std::to_string(info->getAge()) + ", the image's CodeView record wants GUID " +
                guidString(expected.guid) + " age " + std::to_string(expected.age));

  Expected<pdb::DbiStream &> dbi = file.getPDBDbiStream();
  if (!dbi) return fail(errorText(dbi.takeError()));
  Expected<pdb::TpiStream &> tpi = file.getPDBTpiStream();
  if (!tpi) return fail(errorText(tpi.takeError()));
  RecordVisitor visitor{dbi->getSectionHeaders(), functions, dataObjects, &tpi->typeCollection()};
  // Globals (S_GDATA32, S_GTHREAD32) live in the symbol record stream, statics in module streams.
  if (dbi->getGlobalSymbolStreamIndex() != pdb::kInvalidStreamIndex) {
    Expected<pdb::SymbolStream &> globals = file.getPDBSymbolStream();
    if (!globals) return fail(errorText(globals.takeError()));
    for (const codeview::CVSymbol &symbol : globals->getSymbolArray())
      if (Error e = visitor.visit(symbol)) return fail(errorText(std::move(e)));
  }
  const pdb::DbiModuleList &modules = dbi->modules();
  for (uint32_t i = 0; i < modules.getModuleCount(); ++i) {
    pdb::DbiModuleDescriptor descriptor = modules.getModuleDescriptor(i);
    uint16_t streamIndex = descriptor.getModuleStreamIndex();
    if (streamIndex == pdb::kInvalidStreamIndex) continue;
    std::unique_ptr<msf::MappedBlockStream> stream = file.createIndexedStream(streamIndex);
    if (!stream) return fail("module stream " + std::to_string(streamIndex) + " is missing");
    pdb::ModuleDebugStreamRef module(descriptor, std::move(stream));
    if (Error e = module.reload()) return fail("module " + descriptor.getModuleName() + ": " + errorText(std::move(e)));
    bool hadError = false;
    for (const codeview::CVSymbol &symbol : module.symbols(&hadError))
      if (Error e = visitor.visit(symbol)) return fail(errorText(std::move(e)));
    if (hadError) return fail("module " + descriptor.getModuleName() + ": malformed symbol stream");
  }
  return Error::success();
}

}  // namespace hotforge::detail
