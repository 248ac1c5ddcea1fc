// The embedded file plane source: a directory of multi-document YAML files holding plane CRs
// and v1 Secrets. Changes are picked up by polling (default every 250 ms). A malformed document
// is reported with file, document index and reason, and the last good version of it stays in force.
// With a settle time, a changed (or new) file is applied only once its content has stayed the same
// for that long, so a file caught half-written (an editor or `cp` writing in place) is never loaded;
// the first scan at start applies what is there at once.
//
// Scans run on a ControlTimer on the executor given (the gateway's control thread): the scan state
// (files_, settling_, generations_) is touched on its strand only; problems_ is read from any thread.
#pragma once
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include "common/control_timer.hpp"
#include "common/thread_annotations.hpp"
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
  std::string file_error;  // YAML syntax error: nothing in the file is usable
};
FileParse parse_yaml_documents(const std::string& text);

class FilePlaneSource : public PlaneSource {
 public:
  FilePlaneSource(const boost::asio::any_io_executor& control, std::string dir, PlaneIndex& index,
                  std::chrono::milliseconds poll_interval = std::chrono::milliseconds(250),
                  std::chrono::milliseconds settle = std::chrono::milliseconds(0));
  ~FilePlaneSource() override;
  void start() override;  // the first scan (synchronous), then one every poll interval
  void stop() override;  // idempotent; a scan in progress has finished when it returns
  // One synchronous scan, run on the strand (tests). Nothing happens after stop().
  void scan_now();
  // The same, as if the clock read `now` (tests: the settle time without sleeping).
  void scan_now(std::chrono::steady_clock::time_point now);
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
  void tick();  // on the strand
  bool scan(std::chrono::steady_clock::time_point now);  // returns true when the world changed

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
  mutable cg::Mutex mu_;  // guards problems_ only (the scan state is the strand's)
  std::vector<FileProblem> problems_ CG_GUARDED_BY(mu_);
  ControlTimer timer_;
};

}  // namespace cg::plane
