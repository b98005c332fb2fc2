//! A Secret volume written the way the kubelet writes it.

use super::*;

/// Writes a Secret volume the way the kubelet does: files in a new
/// timestamped directory, a `..data_tmp` symlink to it renamed over
/// `..data`, user-visible names as symlinks through `..data`, the old
/// directory removed.
pub struct SecretVolume {
    pub dir: PathBuf,
    n: usize,
}

impl SecretVolume {
    pub fn new(dir: &Path, files: &[(&str, &str)]) -> Self {
        let mut v = Self {
            dir: dir.to_path_buf(),
            n: 0,
        };
        v.update(files);
        // As the kubelet does for a projected path such as `id/tls.crt`:
        // only the top-level name is a symlink through `..data`.
        let mut top: Vec<&str> = files
            .iter()
            .map(|(name, _)| name.split('/').next().unwrap())
            .collect();
        top.dedup();
        for name in top {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        v
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.update_then(files, |_| {});
    }

    /// [`update`](Self::update), calling `then` with the new version's
    /// directory before it is swapped in (to put a symlink or a FIFO
    /// there: whatever the Secret's writer can make the kubelet write).
    pub fn update_then(&mut self, files: &[(&str, &str)], then: impl FnOnce(&Path)) {
        self.n += 1;
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let ts = format!("..2026_11_24_08_00_00.{:04}", self.n);
        let ts_dir = self.dir.join(&ts);
        std::fs::create_dir(&ts_dir).unwrap();
        for (name, contents) in files {
            let path = ts_dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        then(&ts_dir);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}
