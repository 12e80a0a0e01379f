# Run by `cmake --install` (an install(CODE) rule of dist/CMakeLists.txt):
# writes and installs the files that name installed paths, jobq.pc and
# jobqd.service, for the prefix the install really uses — `cmake --install
# --prefix P` changes it after configuration, and the tests install so.
# Relative directories are taken under the prefix, as install() does.
# In: JOBQ_DIST_SRC, JOBQ_DIST_BIN, JOBQ_VERSION, JOBQ_LIBDIR,
# JOBQ_INCLUDEDIR, JOBQ_SBINDIR, JOBQ_SYSCONFDIR, JOBQ_UNITDIR,
# JOBQ_HAVE_CONFIG (whether the example config file is installed).
function(jobq_full out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

set(JOBQ_PREFIX "${CMAKE_INSTALL_PREFIX}")
jobq_full(JOBQ_FULL_LIBDIR "${JOBQ_LIBDIR}")
jobq_full(JOBQ_FULL_INCLUDEDIR "${JOBQ_INCLUDEDIR}")
jobq_full(JOBQ_FULL_SBINDIR "${JOBQ_SBINDIR}")
jobq_full(JOBQ_FULL_SYSCONFDIR "${JOBQ_SYSCONFDIR}")
jobq_full(JOBQ_FULL_UNITDIR "${JOBQ_UNITDIR}")
set(JOBQD_UNIT_CONFIG_ARG "")
if(JOBQ_HAVE_CONFIG)
  set(JOBQD_UNIT_CONFIG_ARG "--config ${JOBQ_FULL_SYSCONFDIR}/jobq/jobqd.conf ")
endif()

configure_file("${JOBQ_DIST_SRC}/pkgconfig/jobq.pc.in" "${JOBQ_DIST_BIN}/installed/jobq.pc" @ONLY)
configure_file("${JOBQ_DIST_SRC}/systemd/jobqd.service.in"
               "${JOBQ_DIST_BIN}/installed/jobqd.service" @ONLY)
file(INSTALL "${JOBQ_DIST_BIN}/installed/jobq.pc" DESTINATION "${JOBQ_FULL_LIBDIR}/pkgconfig")
file(INSTALL "${JOBQ_DIST_BIN}/installed/jobqd.service" DESTINATION "${JOBQ_FULL_UNITDIR}")
