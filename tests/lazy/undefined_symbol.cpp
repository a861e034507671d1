// A library that leaves a symbol undefined and never calls it (tests/forkserver_lazy_test.cpp):
// a program linked with it loads only with lazy binding, as such programs do.
extern "C" int mpx_test_symbol_nobody_defines(int);

extern "C" int mpx_test_call_the_undefined_symbol(int x) {
  return mpx_test_symbol_nobody_defines(x);
}
