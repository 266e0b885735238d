//! Stored files: at most `MAX_UPLOAD_BYTES`, their type sniffed from the
//! bytes and checked against an allow-list (images, PDF, text, CSV,
//! Office documents), stored inline per owner. Only the owner reads or
//! deletes a file.

use base64::Engine;
use bson::{doc, spec::BinarySubtype, Binary, DateTime as BsonTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::now;
use crate::db::batch::Write;
use crate::digest::sha256_hex;
use crate::ApiError;

/// A stored file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileDoc {
    /// Id.
    pub file_id: String,
    /// Owner.
    pub owner_id: String,
    /// The session it was used in, once used (deleted with the session).
    pub session_id: Option<String>,
    /// File name (no path).
    pub name: String,
    /// Sniffed content type.
    pub mime: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// The bytes.
    pub data: Binary,
    /// Stored.
    pub created_at: BsonTime,
}

/// A stored file's metadata as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileView {
    /// Id.
    pub file_id: String,
    /// Name.
    pub name: String,
    /// Sniffed content type.
    pub mime: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the bytes.
    pub sha256: String,
}

impl FileDoc {
    /// The metadata as the API shows it.
    pub fn view(&self) -> FileView {
        FileView {
            file_id: self.file_id.clone(),
            name: self.name.clone(),
            mime: self.mime.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
        }
    }

    /// The file as a Flowise upload: a data URL of type `file`, with the
    /// text it carries (counted as input tokens) when it is text.
    pub fn to_upload(&self) -> CheckedUpload {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.data.bytes);
        CheckedUpload {
            upload: json!({
                "type": "file",
                "name": self.name,
                "mime": self.mime,
                "data": format!("data:{};base64,{b64}", self.mime),
            }),
            text: text_of(&self.mime, &self.data.bytes),
            weight: Weight::of(&self.mime, self.data.bytes.len()),
        }
    }
}

/// An upload ready for Flowise, and the text in it that reaches the model
/// (priced as input tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedUpload {
    /// `{type, name, mime, data}` as Flowise takes it.
    pub upload: Value,
    /// The text it carries, when it is text.
    pub text: Option<String>,
    /// What it counts as when the input is priced.
    pub weight: Weight,
}

/// What an upload counts as when a prediction's input is priced (README,
/// the pricing rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Text: its characters, like the question.
    Text,
    /// An image (a file or an `https://` URL): a flat number of tokens.
    Image,
    /// A document the gateway cannot read (PDF, Office): a number of
    /// tokens per started MiB of its bytes.
    Document(usize),
}

impl Weight {
    fn of(mime: &str, bytes: usize) -> Weight {
        if mime.starts_with("text/") {
            Weight::Text
        } else if mime.starts_with("image/") {
            Weight::Image
        } else {
            Weight::Document(bytes)
        }
    }
}

fn text_of(mime: &str, bytes: &[u8]) -> Option<String> {
    mime.starts_with("text/")
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

fn not_allowed() -> ApiError {
    ApiError::UnsupportedMediaType {
        message: "the file is not an allowed type (images, PDF, text, CSV, Office documents)"
            .into(),
    }
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::PayloadTooLarge {
        message: format!("files may be at most {max_bytes} bytes"),
    }
}

/// Checks one upload a prediction carries inline (Flowise's own `{type,
/// name, mime, data}`) against the rules stored files follow: data URLs
/// (`file`, `file:rag`, `audio`) must decode to at most `max_bytes` of an
/// allowed type (the sniffed type replaces the declared one), `file:full`
/// text must be text, and a `url` must be `https://`. 400 for a malformed
/// upload, 413 when too large, 415 for a type that is not allowed.
pub fn check_inline(
    kind: &str,
    name: &str,
    mime: &str,
    data: &str,
    max_bytes: usize,
) -> Result<CheckedUpload, ApiError> {
    let name = clean_name(name)
        .map_err(|_| ApiError::invalid_field("uploads", "name must be a file name"))?;
    let upload =
        |mime: &str, data: String| json!({"type": kind, "name": name, "mime": mime, "data": data});
    match kind {
        "url" => {
            if !data.starts_with("https://")
                || data.len() > 2048
                || data.contains(char::is_whitespace)
            {
                return Err(ApiError::invalid_field(
                    "uploads",
                    "a url upload must be an https:// URL of at most 2048 characters",
                ));
            }
            Ok(CheckedUpload {
                upload: upload(mime, data.to_owned()),
                text: None,
                weight: Weight::Image,
            })
        }
        "file:full" => {
            if data.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            let sniffed =
                sniff(data.as_bytes(), "text/plain", &name).filter(|m| m.starts_with("text/"));
            let sniffed = sniffed.ok_or_else(not_allowed)?;
            Ok(CheckedUpload {
                upload: upload(sniffed, data.to_owned()),
                text: Some(data.to_owned()),
                weight: Weight::Text,
            })
        }
        "file" | "file:rag" | "audio" => {
            let (declared, b64) = parse_data_url(data).ok_or_else(|| {
                ApiError::invalid_field("uploads", "data must be a data:<type>;base64,<data> URL")
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| ApiError::invalid_field("uploads", "data is not valid base64"))?;
            if bytes.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            let sniffed = sniff(&bytes, declared, &name).ok_or_else(not_allowed)?;
            Ok(CheckedUpload {
                upload: upload(sniffed, format!("data:{sniffed};base64,{b64}")),
                text: text_of(sniffed, &bytes),
                weight: Weight::of(sniffed, bytes.len()),
            })
        }
        _ => Err(ApiError::invalid_field(
            "uploads",
            "type must be file, url, file:full, file:rag or audio",
        )),
    }
}

/// `data:<mime>;base64,<payload>` → (mime, payload).
fn parse_data_url(data: &str) -> Option<(&str, &str)> {
    let rest = data.strip_prefix("data:")?;
    let (meta, payload) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime, payload))
}

const OFFICE: &[(&str, &str)] = &[
    (
        "word/",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "xl/",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (
        "ppt/",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
];

const LEGACY_OFFICE: &[&str] = &[
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
];

/// An OOXML document is a ZIP whose central directory lists
/// `[Content_Types].xml` and the parts of its kind (`word/`, `xl/`,
/// `ppt/`); any other ZIP is not allowed.
fn ooxml_type(bytes: &[u8]) -> Option<&'static str> {
    let names = zip_entry_names(bytes)?;
    if !names.iter().any(|n| n == "[Content_Types].xml") {
        return None;
    }
    OFFICE
        .iter()
        .find(|(dir, _)| names.iter().any(|n| n.starts_with(dir)))
        .map(|(_, mime)| *mime)
}

fn le_u16(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]) as usize)
}

fn le_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The entry names of a ZIP's central directory, read from the end of
/// central directory record; `None` when the structure is not a ZIP's
/// (every offset is bounds-checked, so hostile bytes cannot panic).
fn zip_entry_names(bytes: &[u8]) -> Option<Vec<String>> {
    const END: &[u8] = b"PK\x05\x06";
    const ENTRY: &[u8] = b"PK\x01\x02";
    if bytes.len() < 22 {
        return None;
    }
    // The end record is 22 bytes plus a comment of at most 65535.
    let earliest = bytes.len().saturating_sub(22 + 0xFFFF);
    let end = (earliest..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes.get(i..i + 4) == Some(END))?;
    let count = le_u16(bytes, end + 10)?;
    let size = le_u32(bytes, end + 12)?;
    let offset = le_u32(bytes, end + 16)?;
    let directory = bytes.get(offset..offset.checked_add(size)?)?;
    let mut names = Vec::with_capacity(count.min(1024));
    let mut at = 0;
    for _ in 0..count {
        if directory.get(at..at + 4)? != ENTRY {
            return None;
        }
        let name_len = le_u16(directory, at + 28)?;
        let extra_len = le_u16(directory, at + 30)?;
        let comment_len = le_u16(directory, at + 32)?;
        let name = directory.get(at + 46..at + 46 + name_len)?;
        names.push(String::from_utf8_lossy(name).into_owned());
        at += 46 + name_len + extra_len + comment_len;
    }
    Some(names)
}

/// The allowed content type of `bytes`, from their signature; `declared`
/// (the client's type or the file name) only chooses between types the
/// bytes cannot tell apart (CSV or plain text, which legacy Office format).
pub fn sniff(bytes: &[u8], declared: &str, name: &str) -> Option<&'static str> {
    let declared = declared.to_ascii_lowercase();
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return Some("image/gif");
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    if bytes.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return ooxml_type(bytes);
    }
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return LEGACY_OFFICE
            .iter()
            .find(|m| **m == declared)
            .copied()
            .or(Some("application/msword"));
    }
    // Text: UTF-8 without NUL or other binary control characters.
    let text = std::str::from_utf8(bytes).ok()?;
    if bytes.is_empty()
        || text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
    {
        return None;
    }
    let csv = declared == "text/csv" || name.to_ascii_lowercase().ends_with(".csv");
    Some(if csv { "text/csv" } else { "text/plain" })
}

const FILES: &str = "files";

fn files(db: &Database) -> Collection<FileDoc> {
    db.collection(FILES)
}

/// Keeps the last path component, at most 255 characters, no control
/// characters.
pub fn clean_name(name: &str) -> Result<String, ApiError> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let clean: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    if clean.is_empty() {
        return Err(ApiError::invalid_field("name", "must be a file name"));
    }
    Ok(clean)
}

/// Stores `bytes` for `owner_id`: 413 over `max_bytes`, 415 when the type
/// is not allowed.
pub async fn store(
    db: &Database,
    owner_id: &str,
    name: &str,
    declared_mime: &str,
    bytes: Vec<u8>,
    max_bytes: usize,
) -> Result<FileDoc, ApiError> {
    if bytes.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    let name = clean_name(name)?;
    let mime = sniff(&bytes, declared_mime, &name).ok_or_else(not_allowed)?;
    let doc = FileDoc {
        file_id: uuid::Uuid::new_v4().to_string(),
        owner_id: owner_id.to_owned(),
        session_id: None,
        name,
        mime: mime.to_owned(),
        size: bytes.len() as i64,
        sha256: sha256_hex(&bytes),
        data: Binary {
            subtype: BinarySubtype::Generic,
            bytes,
        },
        created_at: now(),
    };
    files(db).insert_one(&doc).await?;
    Ok(doc)
}

/// The file, if `owner_id` owns it: 404 when unknown, 403 when another
/// user's.
pub async fn owned(db: &Database, file_id: &str, owner_id: &str) -> Result<FileDoc, ApiError> {
    let file = files(db)
        .find_one(doc! {"file_id": file_id})
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no file {file_id}")))?;
    if file.owner_id != owner_id {
        return Err(ApiError::forbidden("this file belongs to another user"));
    }
    Ok(file)
}

/// The write that attaches `owner_id`'s stored file `file_id` to the
/// session it was first sent in (a file already attached keeps its
/// session; another owner's file is never touched).
pub fn attachment(file_id: &str, owner_id: &str, session_id: &str) -> Write {
    Write::Update {
        collection: FILES,
        filter: doc! {"file_id": file_id, "owner_id": owner_id, "session_id": null},
        update: doc! {"$set": {"session_id": session_id}}.into(),
    }
}

/// Detaches `files` from `session_id` (a turn stored in a session deleted
/// meanwhile takes its attachments back).
pub async fn detach(db: &Database, file_ids: &[String], session_id: &str) -> Result<(), ApiError> {
    files(db)
        .update_many(
            doc! {"file_id": {"$in": file_ids}, "session_id": session_id},
            doc! {"$set": {"session_id": null}},
        )
        .await?;
    Ok(())
}

/// Deletes a file.
pub async fn delete(db: &Database, file_id: &str) -> Result<(), ApiError> {
    files(db).delete_one(doc! {"file_id": file_id}).await?;
    Ok(())
}

/// Deletes the files attached to `session_id` (with the session).
pub async fn delete_attached(db: &Database, session_id: &str) -> Result<(), ApiError> {
    files(db)
        .delete_many(doc! {"session_id": session_id})
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::too_many_lines)]
mod tests {
    use super::*;
    use crate::testing::zip_archive as zip;

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\nrest", "text/plain", "a.txt"),
            Some("image/png")
        );
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0], "", "x"),
            Some("image/jpeg")
        );
        assert_eq!(
            sniff(b"%PDF-1.7\n", "image/png", "x.png"),
            Some("application/pdf")
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ", "", "x"), Some("image/webp"));
        assert_eq!(sniff(b"a,b\n1,2\n", "text/csv", "x.csv"), Some("text/csv"));
        assert_eq!(
            sniff("h\u{e9}llo\n".as_bytes(), "", "note"),
            Some("text/plain")
        );
        let docx = zip(&["[Content_Types].xml", "_rels/.rels", "word/document.xml"]);
        assert_eq!(
            sniff(&docx, "", "x.docx"),
            Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
        );
        let xlsx = zip(&["[Content_Types].xml", "xl/workbook.xml"]);
        assert_eq!(
            sniff(&xlsx, "", "x.xlsx"),
            Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        );
    }

    #[test]
    fn a_zip_is_office_only_when_its_directory_says_so() {
        // The names appear in the bytes, but not in a central directory.
        let fake = b"PK\x03\x04....[Content_Types].xml....word/document.xml";
        assert_eq!(sniff(fake, "", "x.docx"), None);
        // A real ZIP without [Content_Types].xml, or without a part of a kind.
        assert_eq!(sniff(&zip(&["word/document.xml"]), "", "x.docx"), None);
        assert_eq!(
            sniff(&zip(&["[Content_Types].xml", "evil.exe"]), "", "x.docx"),
            None
        );
        // A directory pointing past the end, or a truncated archive.
        let mut broken = zip(&["[Content_Types].xml", "word/document.xml"]);
        let len = broken.len();
        broken[len - 6..len - 2].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(sniff(&broken, "", "x.docx"), None);
        let whole = zip(&["[Content_Types].xml", "word/document.xml"]);
        for cut in 4..whole.len() {
            assert_eq!(sniff(&whole[..cut], "", "x.docx"), None, "cut at {cut}");
        }
    }

    #[test]
    fn inline_uploads_pass_the_same_allow_list() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let png = format!("data:image/png;base64,{}", b64(b"\x89PNG\r\n\x1a\nrest"));
        let ok = check_inline("file", "a.png", "image/png", &png, 1024).unwrap();
        assert_eq!(ok.upload["mime"], "image/png");
        assert_eq!(ok.text, None);
        // A declared type is replaced by the sniffed one.
        let text = format!("data:image/png;base64,{}", b64(b"just words"));
        let ok = check_inline("file", "a.png", "image/png", &text, 1024).unwrap();
        assert_eq!(ok.upload["mime"], "text/plain");
        assert_eq!(ok.text.as_deref(), Some("just words"));
        let exe = format!("data:application/pdf;base64,{}", b64(b"MZ\x90\0\x03"));
        let err = check_inline("file", "a.pdf", "application/pdf", &exe, 1024).unwrap_err();
        assert_eq!(err.status(), 415);
        let big = format!("data:text/plain;base64,{}", b64(&[b'a'; 2048]));
        assert_eq!(
            check_inline("file", "a.txt", "text/plain", &big, 1024)
                .unwrap_err()
                .status(),
            413
        );
        assert_eq!(
            check_inline("file", "a", "x", "not a data url", 1024)
                .unwrap_err()
                .status(),
            400
        );
        let full = check_inline(
            "file:full",
            "n.txt",
            "text/plain",
            "The secret is banana.",
            1024,
        )
        .unwrap();
        assert_eq!(full.text.as_deref(), Some("The secret is banana."));
        assert_eq!(
            check_inline("file:full", "n.txt", "text/plain", "nul\0byte", 1024)
                .unwrap_err()
                .status(),
            415
        );
        assert!(check_inline(
            "url",
            "cat",
            "image/png",
            "https://example.com/cat.png",
            1024
        )
        .is_ok());
        for bad in [
            "http://example.com/cat.png",
            "file:///etc/passwd",
            "javascript:alert(1)",
        ] {
            assert_eq!(
                check_inline("url", "cat", "image/png", bad, 1024)
                    .unwrap_err()
                    .status(),
                400,
                "{bad}"
            );
        }
        let audio = format!("data:audio/webm;base64,{}", b64(b"\x1aE\xdf\xa3webm"));
        assert_eq!(
            check_inline("audio", "a.webm", "audio/webm", &audio, 1024)
                .unwrap_err()
                .status(),
            415
        );
        assert_eq!(
            check_inline("exe", "a", "x", "y", 1024)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn executables_archives_and_binaries_are_refused() {
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0", "application/pdf", "x.pdf"),
            None
        );
        assert_eq!(sniff(b"\x7fELF\x02\x01", "text/plain", "x.txt"), None);
        assert_eq!(
            sniff(b"PK\x03\x04random zip", "application/zip", "x.zip"),
            None
        );
        assert_eq!(sniff(b"text\0with nul", "text/plain", "x.txt"), None);
        assert_eq!(sniff(b"", "text/plain", "x.txt"), None);
    }

    #[test]
    fn names_lose_their_path() {
        assert_eq!(clean_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_name("C:\\x\\report.pdf").unwrap(), "report.pdf");
        assert!(clean_name("dir/").is_err());
    }
}
