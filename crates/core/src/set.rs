//! `--set KEY=VALUE` arguments, read one way for recipes and patches: the key is trimmed and
//! must not be empty, the value is taken as it is (it may contain `=`), and a key given twice
//! is an error (which one would win is not obvious from a command line).

/// A `--set` argument that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Not `KEY=VALUE`, or an empty key.
    #[error("`--set {arg}`: expected KEY=VALUE")]
    Malformed {
        /// The argument as given.
        arg: String,
    },
    /// The same key twice.
    #[error("`--set {key}=…` is given twice; give each parameter once")]
    Twice {
        /// The key.
        key: String,
    },
}

/// Splits `KEY=VALUE` arguments into pairs, in the order given.
pub fn parse_sets<S: AsRef<str>>(args: &[S]) -> Result<Vec<(String, String)>, SetError> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(args.len());
    for arg in args {
        let arg = arg.as_ref();
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => (k.trim(), v),
            _ => {
                return Err(SetError::Malformed {
                    arg: arg.to_string(),
                });
            }
        };
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(SetError::Twice {
                key: key.to_string(),
            });
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_order_and_values_keep_equals_signs() {
        assert_eq!(
            parse_sets(&["a=1", " b =x=y", "c="]).unwrap(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x=y".to_string()),
                ("c".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn malformed_and_repeated_keys_are_refused() {
        for bad in ["a", "=1", " =1"] {
            assert_eq!(
                parse_sets(&[bad]),
                Err(SetError::Malformed { arg: bad.into() })
            );
        }
        assert_eq!(
            parse_sets(&["a=1", "a=2"]).unwrap_err().to_string(),
            "`--set a=…` is given twice; give each parameter once"
        );
    }
}
