#pragma once
// Clang thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html) and an
// annotated mutex. libstdc++'s std::mutex and std::lock_guard carry no capability attributes, so
// Clang's -Wthread-safety cannot see them; cg::Mutex and cg::MutexLock wrap them with the
// attributes. Under other compilers the macros expand to nothing and the wrappers cost nothing.
// scripts/lint runs clang-tidy with -Wthread-safety, as errors, over every gateway translation unit
// (docs/architecture.md, "Threads").
//
// Use:
//   mutable cg::Mutex mu_;
//   std::map<K, V> m_ CG_GUARDED_BY(mu_);
//   void helper_locked() CG_REQUIRES(mu_);      // caller holds mu_
//   void public_api() CG_EXCLUDES(mu_);         // takes mu_ itself
//   { cg::MutexLock lk(mu_); ... }              // scoped lock, may unlock()/lock() early
// A condition variable waits on a MutexLock through std::condition_variable_any (cg::MutexLock is
// BasicLockable); the analysis treats the wait as keeping the lock held, which it is on return.

#include <mutex>

#if defined(__clang__)
#define CG_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CG_THREAD_ANNOTATION(x)
#endif

#define CG_CAPABILITY(x) CG_THREAD_ANNOTATION(capability(x))
#define CG_SCOPED_CAPABILITY CG_THREAD_ANNOTATION(scoped_lockable)
#define CG_GUARDED_BY(x) CG_THREAD_ANNOTATION(guarded_by(x))
#define CG_PT_GUARDED_BY(x) CG_THREAD_ANNOTATION(pt_guarded_by(x))
#define CG_ACQUIRED_BEFORE(...) CG_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define CG_ACQUIRED_AFTER(...) CG_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define CG_REQUIRES(...) CG_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define CG_ACQUIRE(...) CG_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define CG_RELEASE(...) CG_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CG_TRY_ACQUIRE(...) CG_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define CG_EXCLUDES(...) CG_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define CG_ASSERT_CAPABILITY(x) CG_THREAD_ANNOTATION(assert_capability(x))
#define CG_RETURN_CAPABILITY(x) CG_THREAD_ANNOTATION(lock_returned(x))
#define CG_NO_THREAD_SAFETY_ANALYSIS CG_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace cg {

// std::mutex with capability attributes. Same size and behaviour as std::mutex.
class CG_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() CG_ACQUIRE() { m_.lock(); }
  void unlock() CG_RELEASE() { m_.unlock(); }
  bool try_lock() CG_TRY_ACQUIRE(true) { return m_.try_lock(); }

  // The wrapped mutex, for code the analysis cannot follow (none today). Locking it directly
  // bypasses the analysis.
  std::mutex& native() CG_RETURN_CAPABILITY(this) { return m_; }

 private:
  std::mutex m_;
};

// Scoped lock of a cg::Mutex (like std::unique_lock: may be unlocked and locked again before the
// end of its scope; releases in its destructor only if held). BasicLockable, so
// std::condition_variable_any can wait on it.
class CG_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) CG_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() CG_RELEASE() {
    if (held_) mu_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void lock() CG_ACQUIRE() {
    mu_.lock();
    held_ = true;
  }
  void unlock() CG_RELEASE() {
    held_ = false;
    mu_.unlock();
  }
  bool owns_lock() const { return held_; }

 private:
  Mutex& mu_;
  bool held_ = true;
};

}  // namespace cg
