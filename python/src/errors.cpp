// cudl.Error and its kinds: every exception from the library reaches Python as one of them, with
// the C++ message whole (it names the op or file and what was expected).
//   cudl.Error            (Exception)            any cudl::Error
//   cudl.ValueError       (cudl.Error, ValueError)  a bad argument: dtype, shape, option, label
//   cudl.FileError        (cudl.Error, OSError)     a file that is missing or cannot be read/written
//   cudl.OutOfMemoryError (cudl.Error, MemoryError) the device or its pool ran out
// Each kind derives from the matching built-in too, so `except ValueError` catches bad values
// whether they came from cudl or not.
#include <Python.h>

#include <filesystem>

#include "python/src/common.hpp"

namespace cudl::python {
namespace {

// Owned by the module (added as attributes), so they live as long as it does.
PyObject* g_error = nullptr;
PyObject* g_value_error = nullptr;
PyObject* g_file_error = nullptr;
PyObject* g_oom_error = nullptr;

PyObject* new_kind(py::module_& m, const char* name, PyObject* builtin, const char* doc) {
  py::tuple bases =
      builtin ? py::make_tuple(py::handle(g_error), py::handle(builtin)) : py::make_tuple(py::handle(PyExc_Exception));
  const std::string qualified = std::string("cudl.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (!type) throw py::error_already_set();
  m.attr(name) = py::handle(type);  // the module holds the reference
  Py_DECREF(type);
  return type;
}

}  // namespace

void check_input_file(const std::string& what, const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw FileError(fmt::format("{}: '{}' does not exist", what, path));
  if (!std::filesystem::is_regular_file(status))
    throw FileError(fmt::format("{}: '{}' is not a regular file", what, path));
}

void bind_errors(py::module_& m) {
  g_error = new_kind(m, "Error", nullptr, "Base class of every error cudl raises; str() is the C++ message.");
  g_value_error = new_kind(m, "ValueError", PyExc_ValueError, "A bad value: dtype, shape, layout, option or label.");
  g_file_error = new_kind(m, "FileError", PyExc_OSError, "A file that is missing, unreadable or malformed.");
  g_oom_error =
      new_kind(m, "OutOfMemoryError", PyExc_MemoryError, "The device (or its memory pool) ran out of memory.");
  // Most derived first: the first translator that matches wins.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ValueError& e) {
      PyErr_SetString(g_value_error, e.what());
    } catch (const FileError& e) {
      PyErr_SetString(g_file_error, e.what());
    } catch (const OutOfMemoryError& e) {
      PyErr_SetString(g_oom_error, e.what());
    } catch (const Error& e) {
      PyErr_SetString(g_error, e.what());
    }
  });
}

}  // namespace cudl::python
