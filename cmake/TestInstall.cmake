# ctest install_package: `cmake --install` into a temporary prefix, then configure, build and
# run the installed examples/ as an outside project (find_package(cocom), cocom::cocom).
#   cmake -DBUILD_DIR=... -DWORK_DIR=... -DLIBDIR=lib -DDATADIR=share -DGENERATOR=...
#         -DCXX=... -DFIXTURE_MODEL=.../tests/data/fixtures/cocom [-DCONSUMER_FLAGS=...]
#         -P TestInstall.cmake
# CONSUMER_FLAGS go to the outside project's compile and link lines (a sanitized build passes
# -fsanitize=... so that the sanitizer runtimes load first).
foreach(v BUILD_DIR WORK_DIR LIBDIR DATADIR GENERATOR CXX FIXTURE_MODEL)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "TestInstall.cmake: -D${v}=... is required")
  endif()
endforeach()

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
run("cmake --install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")

foreach(f include/cocom/cocom.h bin/cocom ${LIBDIR}/libcocom.so ${LIBDIR}/libcocom_spm.so
          ${LIBDIR}/cmake/cocom/cocomConfig.cmake ${LIBDIR}/cmake/cocom/cocomConfigVersion.cmake
          ${LIBDIR}/cmake/cocom/cocomTargets.cmake ${DATADIR}/cocom/examples/CMakeLists.txt)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "not installed: ${prefix}/${f}")
  endif()
endforeach()

# The public headers must not need libtorch, FAISS, RocksDB or spdlog.
file(GLOB_RECURSE headers "${prefix}/include/*")
foreach(h ${headers})
  file(STRINGS "${h}" includes REGEX "^[ \t]*#[ \t]*include")
  foreach(line ${includes})
    if(line MATCHES "torch|ATen|c10/|faiss|rocksdb|spdlog|nlohmann|\"(common|engine|model|index|storage)/")
      message(FATAL_ERROR "${h} includes a private dependency: ${line}")
    endif()
  endforeach()
endforeach()

# An outside project: the installed examples, found through CMAKE_PREFIX_PATH only.
set(src "${prefix}/${DATADIR}/cocom/examples")
set(bld "${WORK_DIR}/build")
run("configuring the examples" "${CMAKE_COMMAND}" -S "${src}" -B "${bld}" -G "${GENERATOR}"
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DCMAKE_CXX_FLAGS=${CONSUMER_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_FLAGS}")
run("building the examples" "${CMAKE_COMMAND}" --build "${bld}")
if(NOT EXISTS "${bld}/example_minimal")
  message(FATAL_ERROR "${bld}/example_minimal was not built")
endif()

# Run it once. LD_DEBUG=libs makes the dynamic loader name every library it initialises: the
# sentencepiece shim must come from the prefix, beside libcocom.so, not from the build tree.
run("example_minimal" "${CMAKE_COMMAND}" -E env LD_DEBUG=libs COCOM_SPM_LIBRARY=
    "${bld}/example_minimal" "${WORK_DIR}/db" "${FIXTURE_MODEL}" "${src}/docs"
    "What is COCOM?")
set(out "${run_output}")
if(NOT out MATCHES "answer: " OR NOT out MATCHES "\\[1\\] ")
  message(FATAL_ERROR "example_minimal printed no answer and sources:\n${out}")
endif()
foreach(lib libcocom.so libcocom_spm.so)
  string(FIND "${out}" "init: ${prefix}/${LIBDIR}/${lib}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "example_minimal did not load ${lib} from ${prefix}/${LIBDIR}:\n${out}")
  endif()
endforeach()
string(REGEX MATCH "ingested: [^\n]*" lines "${out}")

# The Model without a store: compress into the example's own files, answer from them.
run("example_own_vectors" "${bld}/example_own_vectors" "${FIXTURE_MODEL}" "${WORK_DIR}/vectors"
    "${src}/docs" "How does the knowledge store keep passages?")
if(NOT run_output MATCHES "compressed [1-9][0-9]* passages" OR NOT run_output MATCHES "answer: "
   OR NOT run_output MATCHES "\\[1\\] [a-z-]+[.](md|txt)")
  message(FATAL_ERROR "example_own_vectors did not compress and answer:\n${run_output}")
endif()
string(REGEX MATCH "compressed [^\n]*" own "${run_output}")
string(APPEND lines "\n${own}")

# The installed command finds its shim in <prefix>/<libdir> too.
run("installed cocom tokenize" "${CMAKE_COMMAND}" -E env LD_DEBUG=libs COCOM_SPM_LIBRARY=
    "${prefix}/bin/cocom" tokenize --tokenizer "${FIXTURE_MODEL}/base_decoder" "hello world")
string(FIND "${run_output}" "init: ${prefix}/bin/../${LIBDIR}/libcocom_spm.so" at)
string(FIND "${run_output}" "init: ${prefix}/${LIBDIR}/libcocom_spm.so" at2)
if(at EQUAL -1 AND at2 EQUAL -1)
  message(FATAL_ERROR "${prefix}/bin/cocom did not load the shim from the prefix:\n${run_output}")
endif()
message("installed into ${prefix}; the examples built against it ran:\n${lines}")
