//! Next-token selection from logits: greedy, or temperature sampling with top-k, top-p, min-p and a repetition
//! penalty, seeded and reproducible.
//!
//! Order of the steps (as in Hugging Face `generate`): repetition penalty, temperature, top-k, top-p, min-p, then
//! one draw from what is left. The whole vocabulary is never sorted: top-k uses a partial selection
//! (`select_nth_unstable_by`), and top-p sorts a growing candidate prefix only until it holds the requested mass.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{LlmError, Result};

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None` or `0`: no limit).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (`None` or `1`: no limit).
    pub top_p: Option<f32>,
    /// Drop tokens whose probability is below `min_p` times the most likely token's (`None` or `0`: no limit).
    pub min_p: Option<f32>,
    /// Repetition penalty (`1` = none): a positive logit of a recent token is divided by it, a negative one
    /// multiplied.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the random generator (`None`: a random seed).
    pub seed: Option<u64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingConfig {
    /// Checks that every setting is in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LlmError::InvalidRequest(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("top-p must be in (0, 1], got {p}"));
            }
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("min-p must be in [0, 1], got {p}"));
            }
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(format!(
                "repeat penalty must be a finite number > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// Picks tokens from logits according to a [`SamplingConfig`]; holds the seeded random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    seed: u64,
    rng: StdRng,
}

/// Smallest candidate prefix tried by top-p before growing it.
const TOP_P_FIRST_CANDIDATES: usize = 64;

impl Sampler {
    /// A sampler with the given settings (validated).
    pub fn new(config: SamplingConfig) -> Result<Sampler> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(|| rand::rng().random());
        Ok(Sampler {
            config,
            seed,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// The seed actually used (the configured one, or the random one drawn when none was given).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Picks the next token from `logits` (one per vocabulary entry); `history` is the sequence so far, used by the
    /// repetition penalty. Non-finite logits (NaN, −inf) are never picked.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        let mut logits = logits.to_vec();
        apply_repeat_penalty(
            &mut logits,
            history,
            self.config.repeat_penalty,
            self.config.repeat_last_n,
        );
        if self.config.temperature == 0.0 {
            return argmax(&logits);
        }
        let kept = self.candidates(&logits)?;
        let total: f64 = kept.iter().map(|c| c.1).sum();
        let mut target = self.rng.random::<f64>() * total;
        for &(id, weight) in &kept {
            if target < weight {
                return Ok(id);
            }
            target -= weight;
        }
        // Rounding can leave `target` a hair above the last weight: the draw belongs to the last candidate.
        kept.last()
            .map(|c| c.0)
            .ok_or_else(|| LlmError::InvalidRequest("no token can be sampled".to_string()))
    }

    /// The tokens left after temperature, top-k, top-p and min-p, with unnormalised weights
    /// `exp((logit - max) / T)`.
    fn candidates(&self, logits: &[f32]) -> Result<Vec<(u32, f64)>> {
        let inv_t = 1.0 / f64::from(self.config.temperature);
        let mut pool: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if pool.is_empty() {
            return Err(LlmError::InvalidRequest(
                "every logit is NaN or infinite; no token can be sampled".to_string(),
            ));
        }
        if let Some(k) = self.config.top_k.filter(|&k| k > 0 && k < pool.len()) {
            pool.select_nth_unstable_by(k - 1, descending);
            pool.truncate(k);
        }
        let max = pool.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let mut weighted: Vec<(u32, f64)> = pool
            .into_iter()
            .map(|(id, l)| (id, (f64::from(l - max) * inv_t).exp()))
            .collect();
        if let Some(p) = self.config.top_p.filter(|&p| p < 1.0) {
            weighted = top_p(weighted, f64::from(p));
        }
        if let Some(min_p) = self.config.min_p.filter(|&p| p > 0.0) {
            // The most likely token has weight 1 (or the largest weight after top-p, which keeps it).
            let best = weighted.iter().map(|c| c.1).fold(0.0, f64::max);
            let threshold = f64::from(min_p) * best;
            weighted.retain(|c| c.1 >= threshold);
        }
        Ok(weighted)
    }
}

/// Orders candidates by logit, largest first (ties: smaller id first).
fn descending(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the smallest prefix (by weight, largest first) whose mass reaches `p` of the total; at least one token.
/// Sorts only a growing prefix of the candidates, never the whole set unless the mass requires it.
fn top_p(mut weighted: Vec<(u32, f64)>, p: f64) -> Vec<(u32, f64)> {
    let total: f64 = weighted.iter().map(|c| c.1).sum();
    let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut prefix = TOP_P_FIRST_CANDIDATES.min(weighted.len());
    loop {
        if prefix < weighted.len() {
            weighted.select_nth_unstable_by(prefix - 1, order);
        }
        let head = weighted.get_mut(..prefix).unwrap_or_default();
        head.sort_unstable_by(order);
        let mut mass = 0.0;
        let cut = head.iter().position(|c| {
            mass += c.1;
            mass >= p * total
        });
        if let Some(i) = cut {
            weighted.truncate(i + 1);
            return weighted;
        }
        if prefix == weighted.len() {
            return weighted;
        }
        prefix = (prefix * 4).min(weighted.len());
    }
}

/// Applies the repetition penalty to the logits of the distinct tokens among the last `last_n` of `history`.
pub fn apply_repeat_penalty(logits: &mut [f32], history: &[u32], penalty: f32, last_n: usize) {
    if penalty == 1.0 || last_n == 0 {
        return;
    }
    let start = history.len().saturating_sub(last_n);
    let mut seen = std::collections::HashSet::new();
    for &token in history.get(start..).unwrap_or(&[]) {
        if !seen.insert(token) {
            continue;
        }
        if let Some(l) = logits.get_mut(token as usize) {
            *l = if *l >= 0.0 {
                *l / penalty
            } else {
                *l * penalty
            };
        }
    }
}

/// Index of the largest finite logit (ties: the smallest index).
pub fn argmax(logits: &[f32]) -> Result<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32).ok_or_else(|| {
        LlmError::InvalidRequest("every logit is NaN or -inf; no token can be chosen".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(temperature: f32, seed: u64) -> SamplingConfig {
        SamplingConfig {
            temperature,
            seed: Some(seed),
            ..SamplingConfig::default()
        }
    }

    /// Logits whose softmax at T=1 is exactly `probs`.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| p.ln() as f32).collect()
    }

    fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[sampler.sample(logits, &[]).unwrap() as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    /// Pearson chi-square statistic of observed frequencies against expected probabilities (zero-probability cells
    /// must be observed zero times).
    fn chi_square(observed: &[f64], expected: &[f64], draws: usize) -> f64 {
        observed
            .iter()
            .zip(expected)
            .map(|(&o, &e)| {
                if e == 0.0 {
                    assert_eq!(o, 0.0, "a token with probability 0 was drawn");
                    0.0
                } else {
                    let n = draws as f64;
                    (o * n - e * n).powi(2) / (e * n)
                }
            })
            .sum()
    }

    #[test]
    fn greedy_picks_the_largest_and_skips_nan() {
        let mut s = Sampler::new(config(0.0, 1)).unwrap();
        assert_eq!(s.sample(&[0.1, f32::NAN, 3.0, 2.0], &[]).unwrap(), 2);
        assert_eq!(s.sample(&[1.0, 1.0], &[]).unwrap(), 0);
        assert!(s.sample(&[f32::NAN, f32::NEG_INFINITY], &[]).is_err());
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(config(1.0, seed)).unwrap();
            (0..40)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn temperature_sampling_follows_the_softmax() {
        let probs = [0.5, 0.25, 0.15, 0.1];
        let mut s = Sampler::new(config(1.0, 7)).unwrap();
        let draws = 20_000;
        let f = frequencies(&mut s, &logits_of(&probs), draws);
        // 3 degrees of freedom: P(chi2 > 16.27) = 0.001.
        assert!(chi_square(&f, &probs, draws) < 16.27, "{f:?}");
    }

    #[test]
    fn temperature_two_flattens_as_expected() {
        // softmax(ln p / 2) = sqrt(p) / sum sqrt(p).
        let probs = [0.64, 0.16, 0.16, 0.04];
        let expected: Vec<f64> = {
            let roots: Vec<f64> = probs.iter().map(|p: &f64| p.sqrt()).collect();
            let sum: f64 = roots.iter().sum();
            roots.iter().map(|r| r / sum).collect()
        };
        let mut s = Sampler::new(config(2.0, 3)).unwrap();
        let draws = 20_000;
        let f = frequencies(&mut s, &logits_of(&probs), draws);
        assert!(chi_square(&f, &expected, draws) < 16.27, "{f:?}");
    }

    #[test]
    fn top_k_keeps_only_the_k_best() {
        let probs = [0.1, 0.4, 0.05, 0.3, 0.15];
        let mut s = Sampler::new(SamplingConfig {
            top_k: Some(2),
            ..config(1.0, 11)
        })
        .unwrap();
        let draws = 10_000;
        let f = frequencies(&mut s, &logits_of(&probs), draws);
        let expected = [0.0, 0.4 / 0.7, 0.0, 0.3 / 0.7, 0.0];
        assert!(chi_square(&f, &expected, draws) < 10.83, "{f:?}");
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // Sorted: 0.4, 0.3, 0.15, 0.1, 0.05. p = 0.75 needs 0.4 + 0.3 + 0.15 = 0.85.
        let probs = [0.1, 0.4, 0.05, 0.3, 0.15];
        let mut s = Sampler::new(SamplingConfig {
            top_p: Some(0.75),
            ..config(1.0, 5)
        })
        .unwrap();
        let draws = 10_000;
        let f = frequencies(&mut s, &logits_of(&probs), draws);
        let expected = [0.0, 0.4 / 0.85, 0.0, 0.3 / 0.85, 0.15 / 0.85];
        assert!(chi_square(&f, &expected, draws) < 13.82, "{f:?}");
    }

    #[test]
    fn top_p_grows_its_candidate_prefix_when_needed() {
        // 1000 equal tokens: p = 0.5 needs 500 of them, more than the first candidate prefix.
        let logits = vec![0.0f32; 1000];
        let kept = top_p(
            logits
                .iter()
                .enumerate()
                .map(|(i, _)| (i as u32, 1.0))
                .collect(),
            0.5,
        );
        assert_eq!(kept.len(), 500);
        let mut ids: Vec<u32> = kept.iter().map(|c| c.0).collect();
        ids.sort();
        assert_eq!(ids, (0..500).collect::<Vec<u32>>());
    }

    #[test]
    fn min_p_drops_tokens_below_the_fraction_of_the_best() {
        // Relative to the best (0.5): 0.3 -> 0.6, 0.12 -> 0.24, 0.08 -> 0.16. min_p 0.2 drops only the last.
        let probs = [0.5, 0.3, 0.12, 0.08];
        let mut s = Sampler::new(SamplingConfig {
            min_p: Some(0.2),
            ..config(1.0, 9)
        })
        .unwrap();
        let draws = 10_000;
        let f = frequencies(&mut s, &logits_of(&probs), draws);
        let expected = [0.5 / 0.92, 0.3 / 0.92, 0.12 / 0.92, 0.0];
        assert!(chi_square(&f, &expected, draws) < 13.82, "{f:?}");
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut logits = vec![2.0, -1.0, 3.0, 4.0];
        // Token 3 is outside the last 3 tokens; token 0 appears twice but is penalised once.
        apply_repeat_penalty(&mut logits, &[3, 0, 1, 0], 2.0, 3);
        assert_eq!(logits, vec![1.0, -2.0, 3.0, 4.0]);
        let mut s = Sampler::new(SamplingConfig {
            repeat_penalty: 2.0,
            repeat_last_n: 8,
            ..config(0.0, 1)
        })
        .unwrap();
        // 3.0 / 2 = 1.5 < 2.0: the penalised token loses the argmax.
        assert_eq!(s.sample(&[3.0, 2.0], &[0]).unwrap(), 1);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(Sampler::new(config(-1.0, 0)).is_err());
        assert!(Sampler::new(SamplingConfig {
            top_p: Some(0.0),
            ..config(1.0, 0)
        })
        .is_err());
        assert!(Sampler::new(SamplingConfig {
            min_p: Some(1.5),
            ..config(1.0, 0)
        })
        .is_err());
        assert!(Sampler::new(SamplingConfig {
            repeat_penalty: 0.0,
            ..config(1.0, 0)
        })
        .is_err());
    }
}
