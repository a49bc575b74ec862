//! The bounded reader of every file the module reads (see `discovery.rs`): a regular file of at
//! most [`MAX_FILE_SIZE`] bytes, never a FIFO or a device.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// The largest file the module reads (1 MiB).
pub(crate) const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Reads a file the configuration names: a regular file of at most 1 MiB (following symlinks).
/// Never blocks on a FIFO or device: the type is checked before the file is opened, and again
/// on the opened file.
pub fn read_regular_file(path: &Path) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular(path)?;
    read_opened(file, &meta)
}

/// Opens a regular file of at most [`MAX_FILE_SIZE`] bytes and returns it with its metadata
/// (of the opened file, so no one can swap the file between the check and the read).
pub(crate) fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    check_regular(&std::fs::metadata(path)?)?;
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A FIFO put there after the check must not block the open.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    check_regular(&meta)?;
    Ok((file, meta))
}

fn check_regular(meta: &Metadata) -> io::Result<()> {
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(())
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than 1 MiB ({MAX_FILE_SIZE} bytes), the most the module reads"),
    )
}

/// Reads an opened regular file, at most [`MAX_FILE_SIZE`] bytes (it may grow while read).
pub(super) fn read_opened(file: File, meta: &Metadata) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(meta.len().min(MAX_FILE_SIZE) as usize);
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(data)
}
