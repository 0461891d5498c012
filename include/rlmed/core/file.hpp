// rlmed/core/file.hpp — whole-file reads and atomic writes.
//
// Design: nothing rlmed writes can be left half-written (principle 7). A write goes to a
// temporary file in the destination's directory (same filesystem, so rename is atomic), is
// flushed with fsync, then renamed over the destination, and the directory is synced. If
// anything fails before the rename, the temporary is removed and the old file is untouched.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "rlmed/core/error.hpp"

namespace rlmed {

namespace detail {
inline std::string errno_text(int err) { return std::strerror(err); }
}  // namespace detail

/// Reads a whole regular file into memory; errors name the path and the reason.
inline std::vector<std::byte> read_file_bytes(const std::filesystem::path& path,
                                              std::size_t max_bytes = std::size_t(1) << 40) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) RLMED_THROW("cannot open '", path.string(), "' for reading: ", detail::errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    RLMED_THROW("'", path.string(), "' is not a readable regular file");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size > max_bytes) {
    ::close(fd);
    RLMED_THROW("'", path.string(), "' has ", size, " bytes; expected at most ", max_bytes);
  }
  std::vector<std::byte> bytes(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, bytes.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      RLMED_THROW("reading '", path.string(), "' failed after ", done, " of ", size,
                  " bytes: ", n == 0 ? std::string("unexpected end of file") : detail::errno_text(err));
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return bytes;
}

/// Writes a file atomically: a temporary beside the destination, fsync, rename, directory fsync.
/// Usage: AtomicFileWriter w(path); w.write(bytes)...; w.commit();  Without commit() (e.g. an
/// exception) the destination keeps its previous contents and the temporary is removed.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path destination) : destination_(std::move(destination)) {
    std::filesystem::path dir = destination_.parent_path();
    if (dir.empty()) dir = ".";
    std::string temp_name(".");  // built by appends: GCC 12 warns falsely on "." + string
    temp_name += destination_.filename().string();
    temp_name += ".tmp-XXXXXX";
    const std::string pattern = (dir / temp_name).string();
    temp_path_.assign(pattern.begin(), pattern.end());
    temp_path_.push_back('\0');
    fd_ = ::mkstemp(temp_path_.data());
    if (fd_ < 0)
      RLMED_THROW("cannot create a temporary file in '", dir.string(), "' to write '",
                  destination_.string(), "': ", detail::errno_text(errno));
    ::fchmod(fd_, 0644);  // mkstemp creates 0600; a checkpoint is an ordinary readable file
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() { abandon(); }

  void write(std::span<const std::byte> bytes) {
    RLMED_CHECK(fd_ >= 0, "write to '", destination_.string(), "' after commit or failure");
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        abandon();
        RLMED_THROW("writing '", destination_.string(), "' failed: ", detail::errno_text(err));
      }
      done += static_cast<std::size_t>(n);
    }
  }
  void write(const void* data, std::size_t n) { write(std::span(static_cast<const std::byte*>(data), n)); }

  /// Makes the new contents durable and visible under the destination name.
  void commit() {
    RLMED_CHECK(fd_ >= 0, "commit of '", destination_.string(), "' after commit or failure");
    if (::fsync(fd_) != 0) {
      const int err = errno;
      abandon();
      RLMED_THROW("fsync of '", destination_.string(), "' failed: ", detail::errno_text(err));
    }
    ::close(fd_);
    fd_ = -1;
    if (::rename(temp_path_.data(), destination_.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp_path_.data());
      RLMED_THROW("cannot rename the temporary file onto '", destination_.string(), "': ",
                  detail::errno_text(err));
    }
    std::filesystem::path dir = destination_.parent_path();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // best effort: some filesystems refuse fsync on directories
      ::close(dfd);
    }
    committed_ = true;
  }

 private:
  void abandon() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!committed_ && !temp_path_.empty()) {
      ::unlink(temp_path_.data());
      temp_path_.clear();
    }
  }

  std::filesystem::path destination_;
  std::vector<char> temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

/// Replaces `path` with `bytes` atomically.
inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  AtomicFileWriter w(path);
  w.write(bytes);
  w.commit();
}

}  // namespace rlmed
