
$add4c336-3b2f-443f-964d-88cc84481e80case-add4c336

civento-he06"
99115005104000*0641100000002πçÿ:«
application/jsonurn:xoev-de:fim:standard:sampleë{"sample":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}BŸ
attachment-1
sample.pdfapplication/pdf"
attachment(2Äd665ee637ef8fcda8e45f6d8b29216893952facde8430bc1441b7afa5e7c258568a4ec19506fc25383a31c7770fdf2bcf0b82336e4b3cc27172ee447366686e8:%PDF-1.7 sample attachment
