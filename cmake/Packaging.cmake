# Install rules and Debian packages (README.md, "Installing from packages"). Components:
#   authoring    -> package `hotforge` (build hosts): the CLI, the PE appliers, the man page, the docs;
#   target       -> package `hotforge-target` (x64 target hosts): the x64 agent and hotforge-target,
#                   which link the runtime only (no LLVM);
#   agent_arm64  -> package `hotforge-agent` for arm64 (Arm64 target hosts): the cross-compiled agent.
#                   dpkg-shlibdeps finds its libraries in Debian's arm64 multiarch directories.
# Nothing installed refers to the build tree: the executables carry no RPATH (every library is a
# system one) and read no data files; the agent is found by whoever preloads it.
include(GNUInstallDirs)
set(HOTFORGE_LIBDIR ${CMAKE_INSTALL_LIBDIR}/hotforge)
if(CMAKE_INSTALL_LIBDIR MATCHES "^lib/")  # Debian's multiarch lib/x86_64-linux-gnu: keep lib/hotforge
  set(HOTFORGE_LIBDIR lib/hotforge)
endif()

install(TARGETS hotforge RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT authoring)
install(TARGETS hotforge-target RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT target)
install(TARGETS hotforge_agent LIBRARY DESTINATION ${HOTFORGE_LIBDIR} COMPONENT target)
if(TARGET hotforge_agent_aarch64)
  install(FILES ${PROJECT_BINARY_DIR}/loader/agent/aarch64/libhotforge-agent.so
          DESTINATION ${HOTFORGE_LIBDIR}/aarch64 COMPONENT agent_arm64)
endif()
if(TARGET hotforge-pe-apply)
  install(PROGRAMS ${PROJECT_BINARY_DIR}/loader/pe/hotforge-pe-apply.exe DESTINATION ${HOTFORGE_LIBDIR}
          COMPONENT authoring)
endif()
if(TARGET hotforge-pe-emulate)
  install(TARGETS hotforge-pe-emulate RUNTIME DESTINATION ${HOTFORGE_LIBDIR} COMPONENT authoring)
endif()

# Man pages from --help and --version (Debian's help2man); without it, none are installed.
find_program(HOTFORGE_HELP2MAN help2man)
if(HOTFORGE_HELP2MAN)
  foreach(program hotforge hotforge-target)
    set(page ${PROJECT_BINARY_DIR}/man/${program}.1)
    add_custom_command(OUTPUT ${page}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND ${HOTFORGE_HELP2MAN} --no-info --section=1 --output=${page} $<TARGET_FILE:${program}>
      DEPENDS ${program}
      COMMENT "Writing the man page of ${program} with help2man"
      VERBATIM)
    add_custom_target(${program}-man ALL DEPENDS ${page})
  endforeach()
  install(FILES ${PROJECT_BINARY_DIR}/man/hotforge.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT authoring)
  install(FILES ${PROJECT_BINARY_DIR}/man/hotforge-target.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT target)
else()
  message(STATUS "help2man not found (Debian: help2man): no man pages")
endif()

install(FILES README.md packager/FORMAT.md DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT authoring)
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs COMPONENT authoring FILES_MATCHING PATTERN "*.md")
install(FILES docs/loader.md DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/hotforge-target COMPONENT target)

set(CPACK_PACKAGE_NAME hotforge)
set(CPACK_PACKAGE_VENDOR "Hotforge")
set(CPACK_PACKAGE_CONTACT "Hotforge maintainers <hotforge@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_COMPONENTS_ALL authoring target)
if(TARGET hotforge_agent_aarch64)
  list(APPEND CPACK_COMPONENTS_ALL agent_arm64)
endif()
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends computed by dpkg-shlibdeps
set(CPACK_DEBIAN_AUTHORING_PACKAGE_NAME hotforge)
set(CPACK_COMPONENT_AUTHORING_DESCRIPTION
    "hotpatch authoring toolchain (build hosts)\n"
    "Reads a baseline and a patched build of an ELF or PE binary (x64, Arm64), finds the functions that "
    "changed, emits hotpatch images and packs them into signed delivery units; HTML review reports; "
    "also ships the Arm64 agent and the PE appliers for deployment.")
set(CPACK_DEBIAN_TARGET_PACKAGE_NAME hotforge-target)
set(CPACK_DEBIAN_TARGET_PACKAGE_SECTION admin)
set(CPACK_COMPONENT_TARGET_DESCRIPTION
    "applies Hotforge hotpatch units to running processes (target hosts)\n"
    "hotforge-target (apply, revert, status with ptrace) and the LD_PRELOAD agent "
    "libhotforge-agent.so. Verifies signed units; needs no LLVM.")
set(CPACK_DEBIAN_AGENT_ARM64_PACKAGE_NAME hotforge-agent)
set(CPACK_DEBIAN_AGENT_ARM64_PACKAGE_ARCHITECTURE arm64)
set(CPACK_DEBIAN_AGENT_ARM64_PACKAGE_SECTION admin)
set(CPACK_COMPONENT_AGENT_ARM64_DESCRIPTION
    "Hotforge LD_PRELOAD agent for Arm64 Linux (target hosts)\n"
    "libhotforge-agent.so applies signed Hotforge hotpatch units from inside the process it is "
    "preloaded into (also under qemu-user). Needs no LLVM.")
include(CPack)
