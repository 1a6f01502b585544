//! Sending a file descriptor along with bytes on a Unix socket
//! (`SCM_RIGHTS`, unix(7)): QMP's `getfd` and a D-Bus `h` argument both
//! take theirs that way. Std has no stable API for it, hence libc.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// Writes all of `bytes` to `stream` with `fd` attached to the first
/// `sendmsg`; the receiver gets its own copy of the fd.
pub fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd<'_>) -> Result<(), String> {
    let fd_len = size_of::<libc::c_int>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64s: the control buffer must be aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov =
        libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: `header` points at `control`, which has room for one
    // cmsghdr with one int (CMSG_SPACE above), so CMSG_FIRSTHDR is
    // non-null and its header and data lie inside `control`.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        libc::CMSG_DATA(cmsg).cast::<libc::c_int>().write_unaligned(fd.as_raw_fd());
        // `iov` and `control` outlive the call; the kernel only reads them.
        libc::sendmsg(stream.as_raw_fd(), &header, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(format!("sendmsg with an fd: {}", std::io::Error::last_os_error()));
    }
    (&*stream).write_all(&bytes[sent as usize..]).map_err(|e| format!("socket write: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn the_fd_arrives_with_the_bytes() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (passed, mut kept) = UnixStream::pair().unwrap();
        send_with_fd(&ours, b"hello", passed.as_fd()).unwrap();
        drop(passed);
        let mut buf = [0u8; 5];
        let mut data = [0u64; 4];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: plain data, then buffers that outlive the call.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = data.as_mut_ptr().cast();
        header.msg_controllen = size_of_val(&data) as _;
        // SAFETY: as above; the received fd is read from inside `data`.
        let fd = unsafe {
            assert_eq!(libc::recvmsg(theirs.as_raw_fd(), &mut header, 0), 5);
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            assert!(!cmsg.is_null());
            assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
            libc::CMSG_DATA(cmsg).cast::<libc::c_int>().read_unaligned()
        };
        assert_eq!(&buf, b"hello");
        // The received copy is a live end of the second pair.
        // SAFETY: `fd` was just received and is open; one byte from a
        // static buffer.
        let written = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
        assert_eq!(written, 1);
        let mut x = [0u8];
        kept.read_exact(&mut x).unwrap();
        assert_eq!(&x, b"x");
        // SAFETY: `fd` is ours, received above, and closed once.
        unsafe { libc::close(fd) };
    }
}
