//! createOptions as IoT Hub carries them: a JSON string cut into twin values of at most 512
//! characters, named `createOptions`, `createOptions01`, `createOptions02`… (edgeAgent's
//! `DockerConfig` joins them back in that order).

use serde_json::{Map, Value};

use super::ManifestError;

/// Longest twin value edgeAgent accepts per chunk (`TwinValueMaxSize`).
pub const CHUNK_MAX: usize = 512;
/// Most chunks edgeAgent joins (`TwinValueMaxChunks`).
const CHUNKS_MAX: usize = 100;

/// A module's `settings`: its image and its createOptions in chunks.
pub(super) fn settings(
    module: &'static str,
    image: &str,
    create: Option<&Value>,
) -> Result<Value, ManifestError> {
    let mut settings = Map::new();
    settings.insert("image".into(), Value::String(image.to_owned()));
    if let Some(create) = create {
        let text = serde_json::to_string(create)?;
        let chunks = split(&text);
        if chunks.len() > CHUNKS_MAX {
            return Err(ManifestError::CreateOptionsTooLong {
                module,
                len: text.chars().count(),
                max: CHUNK_MAX * CHUNKS_MAX,
            });
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            settings.insert(chunk_key(i), Value::String(chunk));
        }
    }
    Ok(Value::Object(settings))
}

/// Cuts `text` into pieces of at most `CHUNK_MAX` UTF-16 units (what .NET counts as
/// characters), never inside a character.
pub fn split(text: &str) -> Vec<String> {
    let mut chunks = vec![String::new()];
    let mut units = 0;
    for c in text.chars() {
        if units + c.len_utf16() > CHUNK_MAX {
            chunks.push(String::new());
            units = 0;
        }
        units += c.len_utf16();
        if let Some(last) = chunks.last_mut() {
            last.push(c);
        }
    }
    chunks
}

/// The twin key of chunk `i`: `createOptions`, then `createOptions01`, `createOptions02`…
pub fn chunk_key(i: usize) -> String {
    if i == 0 {
        "createOptions".to_owned()
    } else {
        format!("createOptions{i:02}")
    }
}
