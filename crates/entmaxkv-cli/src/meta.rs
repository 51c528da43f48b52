//! Provenance stamped on every result file: date, git commit, machine.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    pub date_utc: String,
    pub git_commit: String,
    pub machine: String,
    pub cpus: usize,
    pub entmaxkv_version: &'static str,
}

pub fn provenance() -> Provenance {
    Provenance {
        date_utc: now_utc(),
        git_commit: git_commit(),
        machine: cpu_model(),
        cpus: rayon::current_num_threads(),
        entmaxkv_version: env!("CARGO_PKG_VERSION"),
    }
}

/// The commit the binary was built from (embedded by build.rs; a binary run on another
/// machine has no repository to ask).
fn git_commit() -> String {
    env!("ENTMAXKV_BUILD_COMMIT").to_string()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// `YYYY-MM-DDTHH:MM:SSZ` from the system clock (civil-from-days, no time-zone database).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
