# A4PSPlugin.cmake -- a4ps_add_plugin(), the one way to build a plugin.
#
# In this tree it is included by the top-level CMakeLists; installed, it is
# found with find_package(A4PSPlugin) by out-of-tree plugins.  A plugin is a
# MODULE library named NAME.so (no "lib" prefix), built with hidden
# visibility so that only a4ps_plugin_entry is exported, against the abi/
# headers alone.
if(NOT DEFINED A4PS_ABI_INCLUDE_DIR)
  set(A4PS_ABI_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}")
endif()

function(a4ps_add_plugin name)
  cmake_parse_arguments(P "" "OUTPUT_NAME;OUTPUT_DIRECTORY" "SOURCES;DEFINITIONS" ${ARGN})
  add_library(${name} MODULE ${P_SOURCES})
  target_include_directories(${name} PRIVATE "${A4PS_ABI_INCLUDE_DIR}")
  set_target_properties(${name} PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden)
  if(P_OUTPUT_NAME)
    set_target_properties(${name} PROPERTIES OUTPUT_NAME ${P_OUTPUT_NAME})
  endif()
  if(P_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${P_OUTPUT_DIRECTORY})
  endif()
  if(P_DEFINITIONS)
    target_compile_definitions(${name} PRIVATE ${P_DEFINITIONS})
  endif()
endfunction()
