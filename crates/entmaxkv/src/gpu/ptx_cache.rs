//! An on-disk cache of the PTX that NVRTC makes from the kernel sources.
//!
//! NVRTC took 18 s for one decode module (compute_90 PTX, D = 64, on the 2-core development
//! machine while it built), and every
//! process compiled every module it used again: a test binary, then each `bench`, each
//! `eval`. The driver already keeps the PTX → SASS step in its own cache, so with this one a
//! second process that needs the same module loads it at once.
//!
//! An entry is keyed by the whole source, the NVRTC options and NVRTC's version: an edited
//! kernel, another configuration or another toolkit misses and compiles. Entries are written
//! to a temporary file and renamed into place, so concurrent writers never leave a torn entry;
//! any I/O error only means a miss (the cache never fails a compile).
//!
//! Where: `ENTMAXKV_PTX_CACHE` names the folder (`0` or empty: no cache); unset, it is
//! `$XDG_CACHE_HOME/entmaxkv/ptx`, else `$HOME/.cache/entmaxkv/ptx`, else none.

use std::path::{Path, PathBuf};

/// The cache folder from the environment, or `None` where caching is off or has no home.
pub(crate) fn dir_from_env() -> Option<PathBuf> {
    dir_from(
        std::env::var_os("ENTMAXKV_PTX_CACHE"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn dir_from(
    explicit: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(d) = explicit {
        return (!d.is_empty() && d != "0").then(|| PathBuf::from(d));
    }
    if let Some(x) = xdg.filter(|x| !x.is_empty()) {
        return Some(Path::new(&x).join("entmaxkv").join("ptx"));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".cache").join("entmaxkv").join("ptx"))
}

/// 64-bit FNV-1a from `seed`, over every part with its length (so the parts' boundaries
/// count).
fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = seed;
    for p in parts {
        for &b in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
            h ^= b as u64;
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// The entry's file name: two independent 64-bit hashes of source, options and version.
pub(crate) fn entry_name(src: &str, options: &[String], nvrtc: (i32, i32)) -> String {
    let ver = format!("nvrtc {}.{}", nvrtc.0, nvrtc.1);
    let opts = options.join("\u{1f}");
    let parts: [&[u8]; 3] = [src.as_bytes(), opts.as_bytes(), ver.as_bytes()];
    let a = fnv1a(0xcbf2_9ce4_8422_2325, &parts);
    let b = fnv1a(0x84222325_cbf29ce4 ^ 0x9e37_79b9_7f4a_7c15, &parts);
    format!("{a:016x}{b:016x}.ptx")
}

/// The PTX stored under `name` in `dir`, if any (an empty or unreadable entry is a miss).
pub(crate) fn get(dir: &Path, name: &str) -> Option<String> {
    let ptx = std::fs::read_to_string(dir.join(name)).ok()?;
    (!ptx.is_empty()).then_some(ptx)
}

/// Stores `ptx` under `name` in `dir` (written beside, then renamed into place). Errors are
/// ignored: a failed store is a later miss.
pub(crate) fn put(dir: &Path, name: &str, ptx: &str) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        "{name}.{}.{:?}.{nanos}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&tmp, ptx).is_ok() && std::fs::rename(&tmp, dir.join(name)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn tmp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("entmaxkv-ptx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn folder_from_the_environment() {
        let s = |x: &str| Some(OsString::from(x));
        assert_eq!(dir_from(s("0"), s("/x"), s("/h")), None);
        assert_eq!(dir_from(s(""), s("/x"), s("/h")), None);
        assert_eq!(
            dir_from(s("/c"), s("/x"), s("/h")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            dir_from(None, s("/x"), s("/h")),
            Some(PathBuf::from("/x/entmaxkv/ptx"))
        );
        assert_eq!(
            dir_from(None, s(""), s("/h")),
            Some(PathBuf::from("/h/.cache/entmaxkv/ptx"))
        );
        assert_eq!(dir_from(None, None, None), None);
    }

    #[test]
    fn names_change_with_source_options_and_version() {
        let o = vec!["-DTG=1".to_string(), "-DHEAD_DIM=64".to_string()];
        let n = entry_name("src", &o, (13, 0));
        assert_eq!(n, entry_name("src", &o, (13, 0)));
        assert_ne!(n, entry_name("src ", &o, (13, 0)));
        assert_ne!(n, entry_name("src", &o[..1], (13, 0)));
        assert_ne!(n, entry_name("src", &o, (13, 1)));
        // Where one option ends and the next begins counts.
        let joined = vec!["-DTG=1-DHEAD_DIM=64".to_string()];
        assert_ne!(n, entry_name("src", &joined, (13, 0)));
        assert!(n.ends_with(".ptx") && n.len() == 36);
    }

    #[test]
    fn stored_entries_come_back_and_misses_are_none() {
        let d = tmp_dir("roundtrip");
        let n = entry_name("kernel source", &["-DX=1".into()], (13, 0));
        assert_eq!(get(&d, &n), None);
        put(&d, &n, ".version 9.0\n.entry k()\n");
        assert_eq!(get(&d, &n).as_deref(), Some(".version 9.0\n.entry k()\n"));
        // Replacing an entry leaves the new text and no temporary files.
        put(&d, &n, ".version 9.0\n.entry k2()\n");
        assert_eq!(get(&d, &n).as_deref(), Some(".version 9.0\n.entry k2()\n"));
        let files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![OsString::from(&n)]);
        // An empty entry is a miss.
        std::fs::write(d.join(&n), "").unwrap();
        assert_eq!(get(&d, &n), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_only_a_miss() {
        let d = tmp_dir("blocked");
        std::fs::write(&d, "a file where the folder would go").unwrap();
        let n = entry_name("s", &[], (13, 0));
        put(&d.join("sub"), &n, "ptx");
        assert_eq!(get(&d.join("sub"), &n), None);
        std::fs::remove_file(&d).unwrap();
    }
}
