//! /proc/meminfo, core_pattern

use super::*;

/// `SwapTotal` from the text of `/proc/meminfo`, in bytes.
pub fn parse_swap_total(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("SwapTotal:"))?;
    let mut words = line.split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    let multiplier = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    amount.checked_mul(multiplier)
}

/// The total swap of the host in bytes (`SwapTotal` in `/proc/meminfo`).
pub fn swap_total() -> Result<u64, SysinfoError> {
    let path = Path::new(MEMINFO);
    parse_swap_total(&read_text(path)?).ok_or_else(|| SysinfoError::Parse {
        path: path.to_path_buf(),
        what: "no readable SwapTotal line".to_owned(),
    })
}

/// The kernel's core dump pattern (`/proc/sys/kernel/core_pattern`),
/// without the trailing newline.
pub fn core_pattern() -> Result<String, SysinfoError> {
    Ok(read_text(Path::new(CORE_PATTERN))?.trim_end().to_owned())
}

/// Whether a core pattern hands dumps to a program (`|/path/to/helper`)
/// rather than writing a file.
pub fn core_pattern_is_pipe(pattern: &str) -> bool {
    pattern.trim_start().starts_with('|')
}
