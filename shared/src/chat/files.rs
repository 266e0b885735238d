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

impl FileDoc {
    /// The metadata as the API shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "file_id": self.file_id,
            "name": self.name,
            "mime": self.mime,
            "size": self.size,
            "sha256": self.sha256,
        })
    }

    /// The file as a Flowise upload: a data URL of type `file`.
    pub fn to_upload(&self) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.data.bytes);
        json!({
            "type": "file",
            "name": self.name,
            "mime": self.mime,
            "data": format!("data:{};base64,{b64}", self.mime),
        })
    }
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
        // An OOXML package names its main part in the first entries.
        let head = &bytes[..bytes.len().min(64 * 1024)];
        return OFFICE
            .iter()
            .find(|(dir, _)| contains(head, dir.as_bytes()))
            .map(|(_, mime)| *mime);
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

fn files(db: &Database) -> Collection<FileDoc> {
    db.collection("files")
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
        return Err(ApiError::PayloadTooLarge {
            message: format!("files may be at most {max_bytes} bytes"),
        });
    }
    let name = clean_name(name)?;
    let mime =
        sniff(&bytes, declared_mime, &name).ok_or_else(|| ApiError::UnsupportedMediaType {
            message: "the file is not an allowed type (images, PDF, text, CSV, Office documents)"
                .into(),
        })?;
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

/// Attaches a file to the session it is used in (first use wins).
pub async fn attach(db: &Database, file_id: &str, session_id: &str) -> Result<(), ApiError> {
    files(db)
        .update_one(
            doc! {"file_id": file_id, "session_id": null},
            doc! {"$set": {"session_id": session_id}},
        )
        .await?;
    Ok(())
}

/// Deletes a file.
pub async fn delete(db: &Database, file_id: &str) -> Result<(), ApiError> {
    files(db).delete_one(doc! {"file_id": file_id}).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let docx = b"PK\x03\x04....[Content_Types].xml....word/document.xml";
        assert_eq!(
            sniff(docx, "", "x.docx"),
            Some("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
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
