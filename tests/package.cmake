# Installs the build into a scratch prefix and builds a consumer against it twice: through
# pkg-config (nablacl.pc) and through CMake's find_package(nablacl). An install moved away from
# the configured prefix (cmake --install --prefix) must still describe itself.
#   cmake -DBUILD=<build dir> -DWORK=<scratch dir> -DCC=<C compiler> -DPKG_CONFIG=<pkg-config>
#         -DGENERATOR=<generator> -P package.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/consumer)
set(prefix ${WORK}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${prefix}
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "cmake --install failed: ${err}")
endif()
file(WRITE ${WORK}/consumer/main.c [=[
#include <nablacl.h>
#include <stdio.h>
int main(void) {
  nabla_shape s = {1, 2, 128, 64, 0, 0, 0};
  printf("%s %d\n", nabla_status_str(NABLA_OK), nabla_shape_check(&s, NULL, 0) == NABLA_OK);
  return 0;
}
]=])

# pkg-config: the flags must find the installed header and library.
file(GLOB_RECURSE pcs ${prefix}/*/nablacl.pc)
list(LENGTH pcs n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one installed nablacl.pc, found: ${pcs}")
endif()
get_filename_component(pcdir ${pcs} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs nablacl
                RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(rc)
  message(FATAL_ERROR "pkg-config nablacl failed: ${err}")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
execute_process(COMMAND ${CC} ${WORK}/consumer/main.c ${flags} -o ${WORK}/consumer/by_pkgconfig
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "a consumer does not build with pkg-config's flags (${flags}): ${err}")
endif()

# find_package(nablacl) from the moved prefix.
file(WRITE ${WORK}/consumer/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(nablacl REQUIRED)
add_executable(by_cmake main.c)
target_link_libraries(by_cmake PRIVATE nablacl::nablacl)
]=])
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK}/consumer -B ${WORK}/consumer/build -G ${GENERATOR}
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${CC}
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
if(NOT rc)
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/consumer/build
                  RESULT_VARIABLE rc OUTPUT_VARIABLE err ERROR_VARIABLE err)
endif()
if(rc)
  message(FATAL_ERROR "a consumer does not build with find_package(nablacl): ${err}")
endif()
message(STATUS "installed package builds consumers through pkg-config and find_package")
