// A reader-writer mutex that lets a waiting writer in: once a writer asks, new readers wait.
// (glibc's std::shared_mutex prefers readers, so a steady stream of lookups can starve an insert
// forever.) Meets the SharedMutex requirements used by std::shared_lock / std::unique_lock.
#pragma once

#include <condition_variable>
#include <mutex>

#include "seqkv/core/fp_strict.hpp"

SEQKV_FP_STRICT_BEGIN

namespace seqkv {

class writer_priority_mutex {
public:
    void lock() {
        std::unique_lock l(m_);
        ++writers_waiting_;
        cv_.wait(l, [&] { return !writer_ && readers_ == 0; });
        --writers_waiting_;
        writer_ = true;
    }
    void unlock() {
        {
            std::lock_guard l(m_);
            writer_ = false;
        }
        cv_.notify_all();
    }
    void lock_shared() {
        std::unique_lock l(m_);
        cv_.wait(l, [&] { return !writer_ && writers_waiting_ == 0; });
        ++readers_;
    }
    void unlock_shared() {
        bool last;
        {
            std::lock_guard l(m_);
            last = --readers_ == 0;
        }
        if (last) cv_.notify_all();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    unsigned readers_ = 0, writers_waiting_ = 0;
    bool writer_ = false;
};

}  // namespace seqkv

SEQKV_FP_STRICT_END
