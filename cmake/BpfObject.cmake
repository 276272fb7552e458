# meshcut_bpf_object(NAME SOURCE [DEPENDS hdr...] [DEFINES -DX...])
#   bpf/NAME.bpf.c -> ${CMAKE_BINARY_DIR}/bpf/NAME.bpf.o -> NAME.skel.h
#   and an INTERFACE target meshcut_skel_NAME whose include dir holds the skeleton.
find_program(MESHCUT_CLANG NAMES clang clang-14 REQUIRED)
find_program(MESHCUT_BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

# clang -target bpf does not search the host's multiarch include dirs that
# <linux/bpf.h> needs (asm/types.h): add the dirs clang itself uses, after ours.
execute_process(
  COMMAND ${MESHCUT_CLANG} -v -E -
  INPUT_FILE /dev/null
  OUTPUT_QUIET ERROR_VARIABLE _clang_v)
string(REGEX MATCH "#include <...> search starts here:\n(.*)\nEnd of search list." _m "${_clang_v}")
string(REPLACE "\n" ";" _dirs "${CMAKE_MATCH_1}")
set(MESHCUT_BPF_SYS_INCLUDES "")
foreach(_d IN LISTS _dirs)
  string(STRIP "${_d}" _d)
  if(_d)
    list(APPEND MESHCUT_BPF_SYS_INCLUDES -idirafter ${_d})
  endif()
endforeach()

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(MESHCUT_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(MESHCUT_BPF_ARCH arm64)
else()
  set(MESHCUT_BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

function(meshcut_bpf_object NAME SOURCE)
  cmake_parse_arguments(ARG "" "" "DEPENDS;DEFINES" ${ARGN})
  set(_out ${CMAKE_BINARY_DIR}/bpf)
  set(_obj ${_out}/${NAME}.bpf.o)
  set(_skel ${_out}/${NAME}.skel.h)
  add_custom_command(
    OUTPUT ${_obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${_out}
    COMMAND ${MESHCUT_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${MESHCUT_BPF_ARCH}
            -Wall -Wextra -Werror -Wno-unused-parameter ${ARG_DEFINES}
            -I${PROJECT_SOURCE_DIR}/bpf/include ${MESHCUT_BPF_SYS_INCLUDES}
            -c ${SOURCE} -o ${_obj}
    DEPENDS ${SOURCE} ${ARG_DEPENDS}
    COMMENT "BPF ${NAME}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${_skel}
    COMMAND ${MESHCUT_BPFTOOL} gen skeleton ${_obj} name ${NAME} > ${_skel}
    DEPENDS ${_obj}
    COMMENT "skeleton ${NAME}.skel.h"
    VERBATIM)
  add_custom_target(meshcut_skel_gen_${NAME} DEPENDS ${_skel})
  add_library(meshcut_skel_${NAME} INTERFACE)
  target_include_directories(meshcut_skel_${NAME} INTERFACE ${_out})
  add_dependencies(meshcut_skel_${NAME} meshcut_skel_gen_${NAME})
endfunction()
