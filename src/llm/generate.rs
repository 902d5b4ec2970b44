//! generate_ids: a batched prefill of the prompt, then one cached step per new token, until
//! max_new_tokens, a stop id, the context length or the callback says stop. The last token is
//! never fed back (no wasted forward, quirk 30 fixed).

use super::model::Transformer;
use super::sampler::{Sampler, SamplingConfig};
use crate::error::{Error, Result};

/// The generated ids (a stop id that ended generation included). `on_token` sees each new id as
/// it is chosen and returns false to stop there.
pub fn generate_ids(
    model: &Transformer,
    prompt: &[u32],
    max_new_tokens: usize,
    sampling: SamplingConfig,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    let mut sampler = Sampler::new(sampling)?;
    if prompt.is_empty() {
        return Err(Error::Value("the prompt has no tokens".into()));
    }
    if prompt.len() > model.context_length() {
        return Err(Error::Value(format!("the prompt has {} tokens, more than the context length {}", prompt.len(), model.context_length())));
    }
    if max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    let mut state = model.start()?;
    let mut history = prompt.to_vec();
    let mut token = model.next_token(&mut state, prompt, &mut sampler, &history)?;
    let mut generated = Vec::new();
    loop {
        history.push(token);
        generated.push(token);
        let go_on = on_token(token);
        let full = generated.len() == max_new_tokens || state.len() == model.context_length();
        if !go_on || full || stop_ids.contains(&token) {
            return Ok(generated);
        }
        token = model.next_token(&mut state, &[token], &mut sampler, &history)?;
    }
}
