//! What Redis spent on a benchmark run: its CPU time (`INFO cpu`) and the
//! commands it ran by name (`INFO commandstats`, which counts the commands a
//! script calls too), read before and after and divided by the commands the
//! run applied. Redis is the one part of graphq that does not scale by adding
//! processes, so this is what a command costs a deployment.

use std::collections::BTreeMap;

use serde::Serialize;

/// One reading of a Redis server's counters.
#[derive(Clone, Debug, Default)]
pub struct RedisCounters {
    /// `used_cpu_sys + used_cpu_user`, µs.
    cpu_us: f64,
    /// Calls per command name (lower case, as `cmdstat_<name>` says).
    calls: BTreeMap<String, u64>,
}

/// The Redis work of a run, per applied command.
#[derive(Debug, Serialize)]
pub struct RedisCost {
    /// Redis CPU time (user + system) per applied command, µs.
    pub redis_cpu_us_per_command: f64,
    /// Redis commands run per applied command, counting those scripts call.
    pub redis_commands_per_command: f64,
    /// The same, by command name (most frequent first in the JSON's
    /// consumers' eyes; here sorted by name), each calls / applied.
    pub redis_commands_by_name: BTreeMap<String, f64>,
}

/// Commands the measurement itself sends, left out of the counts.
const OWN: [&str; 1] = ["info"];

impl RedisCounters {
    /// Reads the counters of the Redis at `url`.
    pub async fn read(url: &str) -> redis::RedisResult<RedisCounters> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        Ok(RedisCounters::parse(&cpu, &stats))
    }

    fn parse(cpu: &str, stats: &str) -> RedisCounters {
        let field = |name: &str| {
            cpu.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let cpu_us = (field("used_cpu_sys") + field("used_cpu_user")) * 1e6;
        let calls = stats
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect();
        RedisCounters { cpu_us, calls }
    }

    /// What Redis did between `self` and `after`, per one of `applied`
    /// commands.
    pub fn cost_until(&self, after: &RedisCounters, applied: u64) -> RedisCost {
        let per = |x: f64| x / applied.max(1) as f64;
        let by_name: BTreeMap<String, f64> = after
            .calls
            .iter()
            .filter(|(name, _)| !OWN.contains(&name.as_str()))
            .filter_map(|(name, &n)| {
                let before = self.calls.get(name).copied().unwrap_or(0);
                let ran = n.saturating_sub(before);
                (ran > 0).then(|| (name.clone(), per(ran as f64)))
            })
            .collect();
        RedisCost {
            redis_cpu_us_per_command: per((after.cpu_us - self.cpu_us).max(0.0)),
            redis_commands_per_command: by_name.values().sum(),
            redis_commands_by_name: by_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_is_the_difference_per_applied_command() {
        let before = RedisCounters::parse(
            "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.000000\r\n",
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00\r\n\
             cmdstat_info:calls=3,usec=9,usec_per_call=3.00\r\n",
        );
        let after = RedisCounters::parse(
            "used_cpu_sys:1.700000\r\nused_cpu_user:2.200000\r\n",
            "cmdstat_evalsha:calls=410,usec=2050\r\ncmdstat_info:calls=5,usec=15\r\n\
             cmdstat_xack:calls=200,usec=100\r\n",
        );
        let cost = before.cost_until(&after, 200);
        // 0.4 s of CPU over 200 commands.
        assert!((cost.redis_cpu_us_per_command - 2000.0).abs() < 1e-6);
        assert_eq!(cost.redis_commands_by_name["evalsha"], 2.0);
        assert_eq!(cost.redis_commands_by_name["xack"], 1.0);
        assert!(!cost.redis_commands_by_name.contains_key("info"));
        assert_eq!(cost.redis_commands_per_command, 3.0);
    }
}
