// Executors: run a batch of independent tasks (block workers) and return when all are done.
// Output never depends on the thread count: a task writes only its own slots, and whatever is
// combined afterwards is combined in task order by the caller. The CUDA backend's grid executor
// will model the same interface.
//
//   backend::thread_pool pool(4);
//   pool.run(jobs.size(), [&](std::size_t i) { work(jobs[i]); });
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "seqkv/core/error.hpp"
#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv::backend {

/// A fixed set of worker threads plus the calling thread. threads == 1 runs every task inline on
/// the caller (no threads are started). run() is not reentrant: one batch at a time per pool.
class thread_pool {
public:
    /// threads: total threads that work on a batch, the caller included (0: the machine's count).
    explicit thread_pool(unsigned threads = 1) {
        if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
        require_usage(threads <= 1024, "thread_pool: at most 1024 threads");
        threads_ = threads;
        for (unsigned i = 1; i < threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
    }
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;
    ~thread_pool() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
    }

    /// Threads working on a batch (the caller included).
    unsigned threads() const { return threads_; }

    /// Calls task(i) once for every i < count, in any order and on any of the pool's threads;
    /// returns when all have finished. If tasks throw, the exception of the lowest index is
    /// rethrown (the same one whatever the thread count).
    template <class Task>
    void run(std::size_t count, Task&& task) {
        if (count == 0) return;
        if (threads_ == 1 || count == 1) {
            for (std::size_t i = 0; i < count; ++i) task(i);
            return;
        }
        std::function<void(std::size_t)> fn = std::ref(task);
        batch b{&fn, count};
        {
            std::lock_guard lock(mutex_);
            batch_ = &b;
            ++generation_;
        }
        wake_.notify_all();
        work_on(b);
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return b.finished == b.count && b.helpers == 0; });  // no worker still holds &b
        batch_ = nullptr;
        lock.unlock();
        if (b.first_error) std::rethrow_exception(b.first_error);
    }

private:
    struct batch {
        std::function<void(std::size_t)>* task;
        std::size_t count;
        std::atomic<std::size_t> next{0};
        std::size_t finished = 0;  // guarded by mutex_
        unsigned helpers = 0;      // workers inside work_on(*this); guarded by mutex_
        std::size_t error_index = ~std::size_t{0};
        std::exception_ptr first_error;
        batch(std::function<void(std::size_t)>* t, std::size_t n) : task(t), count(n) {}
    };

    void work_on(batch& b) {
        for (;;) {
            const std::size_t i = b.next.fetch_add(1, std::memory_order_relaxed);
            if (i >= b.count) return;
            std::exception_ptr error;
            try {
                (*b.task)(i);
            } catch (...) {
                error = std::current_exception();
            }
            std::lock_guard lock(mutex_);
            if (error && i < b.error_index) b.error_index = i, b.first_error = error;
            if (++b.finished == b.count) done_.notify_all();
        }
    }

    void worker_loop() {
        std::uint64_t seen = 0;
        for (;;) {
            batch* b = nullptr;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || (batch_ != nullptr && generation_ != seen); });
                if (stopping_) return;
                seen = generation_;
                b = batch_;
                ++b->helpers;
            }
            work_on(*b);
            std::lock_guard lock(mutex_);
            if (--b->helpers == 0 && b->finished == b->count) done_.notify_all();
        }
    }

    unsigned threads_ = 1;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    batch* batch_ = nullptr;
    std::uint64_t generation_ = 0;
    bool stopping_ = false;
};

/// The pool every codec uses unless given another: one thread (the caller), no workers.
inline std::shared_ptr<thread_pool> serial_executor() {
    static const auto pool = std::make_shared<thread_pool>(1);
    return pool;
}

}  // namespace seqkv::backend

SEQKV_FP_STRICT_END
