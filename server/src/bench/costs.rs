//! What a benchmark run cost the system under test: CPU seconds and fsyncs, read before and
//! after the measured window. Servers are read through their Prometheus `/metrics` (both
//! ScaleStore and etcd publish `process_cpu_seconds_total` and fsync counters); an embedded
//! cluster is read in-process.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ServerError, ServerResult};

/// Totals at one instant; subtract two for a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Costs {
    pub cpu_seconds: f64,
    pub fsyncs: f64,
}

impl std::ops::Sub for Costs {
    type Output = Costs;
    fn sub(self, earlier: Costs) -> Costs {
        Costs {
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
            fsyncs: self.fsyncs - earlier.fsyncs,
        }
    }
}

/// The counters that count fsyncs, by system: ScaleStore syncs its WAL once per batch of
/// appends; etcd syncs its WAL and commits (and syncs) its bbolt backend.
pub const SCALESTORE_FSYNCS: &[&str] = &["scalestore_log_fsyncs_total"];
pub const ETCD_FSYNCS: &[&str] = &[
    "etcd_disk_wal_fsync_duration_seconds_count",
    "etcd_disk_backend_commit_duration_seconds_count",
];

/// Sums CPU and fsync counters over every `/metrics` endpoint (HOST:PORT).
pub async fn scrape(endpoints: &[String], fsync_counters: &[&str]) -> ServerResult<Costs> {
    let mut total = Costs::default();
    for endpoint in endpoints {
        let text = get_metrics(endpoint).await?;
        total.cpu_seconds += sum_of(&text, "process_cpu_seconds_total");
        total.fsyncs += fsync_counters.iter().map(|c| sum_of(&text, c)).sum::<f64>();
    }
    Ok(total)
}

/// `GET /metrics` over plain HTTP/1.0 (the body ends when the server closes).
async fn get_metrics(endpoint: &str) -> ServerResult<String> {
    let unreachable = |reason: String| ServerError::Unreachable {
        endpoints: format!("{endpoint} (metrics)"),
        reason,
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(endpoint).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes())
            .await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| unreachable("no answer in 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| unreachable("not an HTTP reply".into()))?;
    let code = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || code != Some("200") {
        let status_line = head.lines().next().unwrap_or_default();
        return Err(unreachable(format!(
            "GET /metrics answered {status_line:?}"
        )));
    }
    Ok(body.to_string())
}

/// The sum of every sample of metric `name` (all label sets) in Prometheus text format.
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            // The name must end here: a label set or the value follows.
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_label_sets_and_not_its_longer_namesakes() {
        let text = "# HELP process_cpu_seconds_total CPU\n\
                    # TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 1.5\n\
                    process_cpu_seconds_total_extra 100\n\
                    etcd_disk_wal_fsync_duration_seconds_count{a=\"1\"} 7\n\
                    etcd_disk_wal_fsync_duration_seconds_count{a=\"2\",b=\"x y\"} 3 1700000000\n\
                    etcd_disk_wal_fsync_duration_seconds_sum 0.4\n";
        assert_eq!(sum_of(text, "process_cpu_seconds_total"), 1.5);
        assert_eq!(
            sum_of(text, "etcd_disk_wal_fsync_duration_seconds_count"),
            10.0
        );
        assert_eq!(sum_of(text, "missing_total"), 0.0);
    }
}
