// The embedded file plane source: a directory of multi-document YAML files holding plane CRs
// and v1 Secrets. Changes are picked up by polling (default every 250 ms). A malformed document
// is reported with file, document index and reason, and the last good version of it stays in force.
// With a settle time, a changed (or new) file is applied only once its content has stayed the same
// for that long, so a file caught half-written (an editor or `cp` writing in place) is never loaded;
// the first scan at start applies what is there at once.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "plane_index/index.hpp"
#include "plane_index/plane_source.hpp"

namespace cg::plane {

struct FileProblem {
  std::string file;
  int document = 0;  // 0-based index in the file; -1: the whole file
  std::string reason;
};

// Parses one file's text; each document yields either an object or a problem (exposed for tests and fuzzing).
struct FileParse {
  std::vector<ParsedObject> docs;  // one per non-empty document, in order
  std::string file_error;          // YAML syntax error: nothing in the file is usable
};
FileParse parse_yaml_documents(const std::string& text);

class FilePlaneSource : public PlaneSource {
 public:
  FilePlaneSource(std::string dir, PlaneIndex& index,
                  std::chrono::milliseconds poll_interval = std::chrono::milliseconds(250),
                  std::chrono::milliseconds settle = std::chrono::milliseconds(0));
  ~FilePlaneSource() override;
  void start() override;
  void stop() override;
  void scan_now();  // one synchronous scan (tests)
  std::vector<FileProblem> problems() const;

 private:
  struct FileState {
    std::string content;
    std::vector<ParsedObject> last_good;  // by document index
  };
  // A changed or new file's content waiting to settle: applied once unchanged for settle_.
  struct Settling {
    std::string content;
    std::chrono::steady_clock::time_point since;
  };
  void run();
  bool scan();  // returns true when the world changed

  std::string dir_;
  PlaneIndex& index_;
  std::chrono::milliseconds poll_;
  std::chrono::milliseconds settle_;
  std::map<std::string, FileState> files_;
  std::map<std::string, Settling> settling_;
  struct GenState {
    std::string spec;
    int64_t generation;
  };
  std::map<CrRef, GenState> generations_;
  mutable std::mutex mu_;
  std::vector<FileProblem> problems_;
  std::mutex scan_mu_;
  std::thread thread_;
  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace cg::plane
