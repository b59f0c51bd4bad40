// The format plug-in axis: one FormatReader per container format. Adding Mach-O means one new
// reader file and one line in formatReaders(); nothing else in Hotforge changes.
#pragma once

#include "hotforge/core/error.h"
#include "hotforge/image.h"

#include <llvm/Object/ObjectFile.h>

#include <map>

namespace hotforge::detail {

class FormatReader {
public:
  virtual ~FormatReader() = default;
  // Whether this reader owns the object's format (it may still refuse it, e.g. a 32-bit variant).
  virtual bool handles(const llvm::object::ObjectFile &object) const = 0;
  // Fills everything but path, identity.sha256 and the buffer, which readImage sets.
  virtual llvm::Error read(const llvm::object::ObjectFile &object, const ImageReadOptions &options,
                           Image &image) const = 0;
  // Whether an executable section holds functions (ELF's PLT holds import stubs).
  virtual bool holdsFunctions(const Section &section) const = 0;
  // The targets of the pointers the loader relocates (ELF RELATIVE, PE DIR64): candidate code
  // addresses for function discovery.
  virtual std::vector<uint64_t> pointerTargets(const Image &image) const = 0;
};

const FormatReader &elfReader();
const FormatReader &peReader();

// Merges function starts seen by several sources into one table; see FunctionSource for the
// precedence. Sizes that no source gives are inferred up to the next start or the section end.
class FunctionTableBuilder {
public:
  void add(uint64_t rva, uint64_t size, std::optional<std::string> name, FunctionSource source,
           bool preferredName = false);
  void addPart(uint64_t parentRva, AddressRange part);
  std::vector<Function> finish(const std::vector<Section> &sections);

private:
  struct Sighting {
    uint64_t rva, size;
    std::optional<std::string> name;
    FunctionSource source;
    bool preferredName;  // e.g. a global symbol rather than a local alias
  };
  // Collected first, merged once in finish(): far cheaper than a map kept ordered on every add.
  std::vector<Sighting> sightings_;
  std::vector<std::pair<uint64_t, AddressRange>> parts_;
};

// Collects DW_TAG_subprogram ranges from the DWARF in `object` (ELF or mingw PE). Problems in the
// debug info become warnings: they never make a readable image unreadable.
void collectDwarfFunctions(const llvm::object::ObjectFile &object, uint64_t imageBase,
                           FunctionSource source, FunctionTableBuilder &functions,
                           std::vector<std::string> &warnings);

// Reads functions and data objects from a PDB. The PDB must belong to the image (GUID and age of
// its CodeView record), else an error names both.
llvm::Error readPdb(const std::string &pdbPath, const CodeViewRecord &expected,
                    FunctionTableBuilder &functions, std::vector<DataObject> &dataObjects);

std::string hexOffset(uint64_t value);

// Completes image.functions from code where the tables leave executable bytes uncovered, and
// fills image.coverage (formats/src/code_discovery.cpp, on codeflow's discovery walk).
llvm::Error discoverFunctionsFromCode(const FormatReader &reader, Image &image);

// Sorts and drops records of one object seen by several sources; with sections, gives objects
// without a size the room up to the next object or the end of their section.
void sortAndDedupDataObjects(std::vector<DataObject> &objects, const std::vector<Section> *inferSizesWithin);

}  // namespace hotforge::detail
