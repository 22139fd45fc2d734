//! The names outputs are saved under: `<img_uuid>_<n>.<ext>`.

/// Extensions a content type may give, and `bin` when none does.
const CONTENT_TYPE_EXTENSIONS: [(&str, &str); 10] = [
    ("video/mp4", "mp4"),
    ("video/webm", "webm"),
    ("video/quicktime", "mov"),
    ("image/jpeg", "jpg"),
    ("image/jpg", "jpg"),
    ("image/png", "png"),
    ("image/webp", "webp"),
    ("image/gif", "gif"),
    ("audio/mpeg", "mp3"),
    ("application/json", "json"),
];

/// The extension of a file whose type nothing names.
pub(super) const FALLBACK_EXTENSION: &str = "bin";

/// The file name of output `index` (from 0) of job `img_uuid`:
/// `<img_uuid>_<index>.<ext>`, where `ext` is the extension of the URL's
/// last path segment ([`extension_from_url`]), else the one the content
/// type names ([`extension_from_content_type`]), else `bin`. The CLI's
/// `--download` and [`Client::download_outputs`] save outputs under it.
///
/// The id is used as given: one that came from a [`JobQuery`] holds only
/// `[A-Za-z0-9._~-]`, so the name never leaves its folder.
///
/// ```
/// use goenhance_jobs::download::output_file_name;
///
/// let url = "https://cdn.example/v/out.MP4?sig=x";
/// assert_eq!(output_file_name("job-1", 0, url, None), "job-1_0.mp4");
/// let url = "https://cdn.example/v/out?sig=x";
/// assert_eq!(output_file_name("job-1", 1, url, Some("image/png")), "job-1_1.png");
/// assert_eq!(output_file_name("job-1", 2, url, None), "job-1_2.bin");
/// ```
///
/// [`Client::download_outputs`]: crate::Client::download_outputs
/// [`JobQuery`]: crate::JobQuery
pub fn output_file_name(
    img_uuid: &str,
    index: usize,
    url: &str,
    content_type: Option<&str>,
) -> String {
    let ext = extension_from_url(url)
        .or_else(|| {
            content_type
                .and_then(extension_from_content_type)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| FALLBACK_EXTENSION.to_owned());
    format!("{img_uuid}_{index}.{ext}")
}

/// The extension of the URL's last path segment: 1 to 5 ASCII letters or
/// digits, lowercased.
///
/// ```
/// use goenhance_jobs::download::extension_from_url;
///
/// assert_eq!(extension_from_url("https://cdn.example/a/b_0.MP4?sig=x.y").as_deref(), Some("mp4"));
/// assert_eq!(extension_from_url("https://cdn.example/a.b/c"), None);
/// ```
pub fn extension_from_url(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    let segment = path.split_once('/')?.1.rsplit('/').next()?;
    let (_, ext) = segment.rsplit_once('.')?;
    if ext.is_empty() || ext.len() > 5 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(ext.to_ascii_lowercase())
}

/// The extension for a content type (`video/mp4` → `mp4`), for the types
/// GoEnhance outputs have.
///
/// ```
/// use goenhance_jobs::download::extension_from_content_type;
///
/// assert_eq!(extension_from_content_type("Image/JPEG; charset=binary"), Some("jpg"));
/// assert_eq!(extension_from_content_type("application/octet-stream"), None);
/// ```
pub fn extension_from_content_type(content_type: &str) -> Option<&'static str> {
    let mime = content_type.split(';').next()?.trim();
    CONTENT_TYPE_EXTENSIONS
        .iter()
        .find(|(m, _)| m.eq_ignore_ascii_case(mime))
        .map(|(_, ext)| *ext)
}

/// Every extension a content type or the fallback gives.
pub(super) fn content_type_extensions() -> impl Iterator<Item = &'static str> {
    CONTENT_TYPE_EXTENSIONS
        .iter()
        .map(|(_, ext)| *ext)
        .chain([FALLBACK_EXTENSION])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_come_from_the_url_path() {
        assert_eq!(
            extension_from_url("https://cdn.example/a/b_0.jpeg").as_deref(),
            Some("jpeg")
        );
        assert_eq!(extension_from_url("https://cdn.example/a/b_0"), None);
        assert_eq!(extension_from_url("https://cdn.example.com"), None);
        assert_eq!(extension_from_url("https://cdn.example/x.toolong"), None);
        assert_eq!(extension_from_url("https://cdn.example/x.m-4"), None);
    }

    #[test]
    fn the_url_names_the_file_before_the_content_type() {
        assert_eq!(
            output_file_name("j", 3, "https://cdn.example/a.webm", Some("video/mp4")),
            "j_3.webm"
        );
        assert_eq!(
            output_file_name("j", 0, "https://cdn.example/a", Some("video/quicktime")),
            "j_0.mov"
        );
        assert_eq!(
            output_file_name("j", 0, "https://cdn.example/a", Some("text/html")),
            "j_0.bin"
        );
        assert_eq!(content_type_extensions().count(), 11);
    }
}
