# libcocom.so, `cmake --install` and the CMake package (find_package(cocom) + cocom::cocom).
#
# In the build tree, tools and tests link the static libraries through the INTERFACE target
# `cocom` (they use internal headers too). What is installed for other programs is a shared
# library, libcocom.so, built from the engine's objects and the static libraries below them,
# that exports the public API of include/cocom/cocom.h and nothing else: libtorch, FAISS,
# RocksDB and spdlog are private dependencies, so a consumer needs none of their headers.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

target_include_directories(cocom INTERFACE ${PROJECT_SOURCE_DIR}/include)

add_library(cocom_shared SHARED $<TARGET_OBJECTS:cocom_engine>)
# storage/ links RocksDB::rocksdb, Debian's librocksdb.a, which is not position independent:
# naming the shared librocksdb.so first (kept with --no-as-needed, else the linker drops it
# before anything refers to it) resolves every RocksDB symbol, so no member of the archive is
# pulled in (one would fail the link with a relocation error).
target_link_libraries(cocom_shared PRIVATE
  "-Wl,--push-state,--no-as-needed" RocksDB::rocksdb-shared "-Wl,--pop-state" cocom_engine)
target_include_directories(cocom_shared INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(cocom_shared INTERFACE cxx_std_17)
set(COCOM_EXPORT_MAP ${PROJECT_SOURCE_DIR}/cmake/libcocom.map)
target_link_options(cocom_shared PRIVATE
  -Wl,--version-script=${COCOM_EXPORT_MAP} -Wl,--no-undefined)
set_target_properties(cocom_shared PROPERTIES
  OUTPUT_NAME cocom
  EXPORT_NAME cocom
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}
  LINK_DEPENDS ${COCOM_EXPORT_MAP})
add_library(cocom::shared ALIAS cocom_shared)

set(COCOM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/cocom)
install(TARGETS cocom_shared EXPORT cocomTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The sentencepiece shim is dlopen'ed at run time, from beside libcocom.so or from
# <prefix>/<libdir> next to bin/cocom (model/tokenizer_spm.cpp).
install(TARGETS cocom_spm LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS cocom_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/cocom DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/
  DESTINATION ${CMAKE_INSTALL_DATADIR}/cocom/examples)
# The default model (scripts/train-default.sh), where DefaultModelDir() looks for it.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/default
  DESTINATION ${CMAKE_INSTALL_DATADIR}/cocom/models OPTIONAL)
install(EXPORT cocomTargets NAMESPACE cocom:: DESTINATION ${COCOM_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/cocomConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cocomConfig.cmake
  INSTALL_DESTINATION ${COCOM_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_BINDIR CMAKE_INSTALL_DATADIR)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cocomConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cocomConfig.cmake ${PROJECT_BINARY_DIR}/cocomConfigVersion.cmake
  DESTINATION ${COCOM_CMAKE_DIR})

# ctest: install into a temporary prefix, build the installed examples/ against it as an
# outside project would, and run the result once (cmake/TestInstall.cmake).
if(COCOM_BUILD_TESTS)
  # A sanitized libcocom needs its sanitizer runtimes linked first by the outside program too.
  set(COCOM_CONSUMER_FLAGS "")
  if(COCOM_SANITIZE)
    set(COCOM_CONSUMER_FLAGS "-fsanitize=address,undefined")
  endif()
  add_test(NAME install_package
    COMMAND ${CMAKE_COMMAND}
      -DBUILD_DIR=${PROJECT_BINARY_DIR}
      -DWORK_DIR=${PROJECT_BINARY_DIR}/install-test
      -DLIBDIR=${CMAKE_INSTALL_LIBDIR}
      -DDATADIR=${CMAKE_INSTALL_DATADIR}
      -DGENERATOR=${CMAKE_GENERATOR}
      -DCXX=${CMAKE_CXX_COMPILER}
      -DFIXTURE_MODEL=${PROJECT_SOURCE_DIR}/tests/data/fixtures/cocom
      "-DCONSUMER_FLAGS=${COCOM_CONSUMER_FLAGS}"
      -P ${PROJECT_SOURCE_DIR}/cmake/TestInstall.cmake)
  set_tests_properties(install_package PROPERTIES TIMEOUT 600)
endif()
