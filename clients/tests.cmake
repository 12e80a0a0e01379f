# Tests of clients/ (libjobq and the jobq CLI). Included by the top-level
# build after clients/ and broker/ are added; paths are relative to this
# file so it works wherever it is included from.

# Unit test: msgpack <-> JSON conversion of libjobq (cmocka).
add_executable(test_json_convert ${CMAKE_CURRENT_LIST_DIR}/../tests/unit/test_json_convert.c)
target_link_libraries(test_json_convert PRIVATE jobqclient PkgConfig::CMOCKA)
add_test(NAME unit.json_convert COMMAND test_json_convert)

# The CLI's end-to-end test (tests/python/test_cli.py) is registered with
# the other Python tests in tests/CMakeLists.txt.

# Unit test: libjobq's request/reply matching (stale replies, keepalives,
# error replies) against a fake ROUTER served by a thread.
add_executable(test_client_calls ${CMAKE_CURRENT_LIST_DIR}/../tests/unit/test_client_calls.c)
target_link_libraries(test_client_calls PRIVATE jobqclient PkgConfig::CMOCKA Threads::Threads)
add_test(NAME unit.client_calls COMMAND test_client_calls)
