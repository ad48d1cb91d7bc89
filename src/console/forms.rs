//! Form fields and query strings as sent, repeated names included (the dead letters
//! selected in a list), which serde's urlencoded forms cannot hold.

/// A value longer than this is cut: no field of the console's forms needs more (a
/// justification is the longest), and nothing sent is kept whole beyond it.
const MAX_FIELD: usize = 2000;

pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(bytes: &[u8]) -> Fields {
        Fields(
            url::form_urlencoded::parse(bytes)
                .map(|(k, v)| {
                    let v: String = v.chars().take(MAX_FIELD).collect();
                    (k.into_owned(), v)
                })
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every non-empty value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A query string of the pairs whose value is not empty.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.into_iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_kept_and_values_trimmed_and_bounded() {
        let long = "x".repeat(MAX_FIELD + 10);
        let f = Fields::parse(format!("id=a&id=+b+&id=&reason=no-route&j={long}").as_bytes());
        assert_eq!(f.all("id"), ["a", "b"]);
        assert_eq!(f.get("reason"), "no-route");
        assert_eq!(f.get("missing"), "");
        assert_eq!(f.get("j").len(), MAX_FIELD);
        assert_eq!(
            query([("reason", "no-route"), ("platform", ""), ("q", "a b&c")]),
            "reason=no-route&q=a+b%26c"
        );
    }
}
