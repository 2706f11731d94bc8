#include "tools/cudl/run.hpp"

int main(int argc, char** argv) { return cudl::cli::run(argc, argv); }
